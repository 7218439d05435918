//! The metrics endpoint: a minimal HTTP/1.1 server for `GET /metrics` (Prometheus scrapes
//! one request per connection; every answer says `Connection: close`).
//!
//! # Clients that never finish
//!
//! Anyone who can connect must not be able to blind the endpoint, and what clients do must not
//! make memory or threads grow. So:
//!
//! - **A thread per connection, at most [`MAX_CONNECTIONS`] at once.** The accepting thread
//!   counts the connections in a table; each connection thread frees its entry when it ends
//!   (a guard's `Drop`, so also on a panic). The threads are scoped: [`serve`] returns only when
//!   all of them have ended, so none outlives the endpoint.
//! - **Past the cap, the oldest connection still waiting for its request head is closed** to
//!   make room, and the new one is served. Connections that have sent their request (they are
//!   being answered) are never closed for this; if every slot holds one, the new client gets
//!   `503 Service Unavailable` at once. Idle or slow clients therefore cannot keep a scrape
//!   out: a scrape sends its head as soon as it connects, so it stops waiting within a round
//!   trip, long before it could become the oldest waiter (only a flood of new connections
//!   faster than that could close it, and no cap without per-address limits stops a flood).
//! - **The request head has a deadline**, [`HEAD_DEADLINE`] from accept for the whole head
//!   (not per read), so a client dribbling a byte a second is cut off (`408`), and the answer
//!   must be written within [`WRITE_DEADLINE`].
//! - **Stop**: the accepting thread looks at the stop flag every [`POLL`]; it then shuts every
//!   connection's socket down, which wakes a connection blocked on a read or a write at once,
//!   and joins them. Only a render already under way is waited for (it asks the workers with
//!   its own timeouts, and they answer or hang up as they stop).
//!
//! Why std threads rather than an HTTP crate: the cap with room made for scrapes and the head
//! deadline are most of this module, and a crate would have to provide both. hyper has a header
//! read timeout but needs an async runtime (tokio) that pinhole does not otherwise have; a
//! synchronous server such as tiny_http would spare the dozen lines of request parsing, not the
//! cap or the deadline. So: `std::net`, scoped threads, no `unsafe`.
//!
//! `render` is called from the connection threads, several at once, hence `Sync`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Scope};
use std::time::{Duration, Instant};

use super::metrics::CONTENT_TYPE;

/// Longest request head read.
const MAX_REQUEST: usize = 8192;
/// Most connections open at once. A Prometheus server scrapes a target over one connection at
/// a time, so an HA pair, a curl and a spare fit many times over; each connection is a thread
/// (stack mostly untouched) plus at most [`MAX_REQUEST`] bytes, and each scrape asks every
/// worker for its counters, so the cap also bounds what scrapes ask of the dataplane at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a client has, from accept, to send its whole request head. Prometheus sends it as
/// soon as it connects (a few hundred bytes), so this is generous even over a slow link.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// How long writing an answer may take, all of it.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// How long the accepting thread waits for a connection it closed to free its slot: the
/// thread wakes and ends at once, so this is reached only on a starved machine.
const EVICT_WAIT: Duration = Duration::from_millis(500);
/// How often the stop flag is looked at while no client comes.
const POLL: Duration = Duration::from_millis(50);

/// Parses `--metrics ADDR`: `PORT` (on 127.0.0.1), `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!("{text:?} is not PORT, IP:PORT or [IPv6]:PORT (for example 9464 or 127.0.0.1:9464)")
    })
}

/// Binds the listener (non-blocking, so that [`serve`] can notice a stop).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics endpoint listens beyond loopback; it has no authentication");
    }
    Ok(listener)
}

/// Answers scrapes until `stop` is set, each connection on its own thread (at most
/// [`MAX_CONNECTIONS`]); `render` makes the exposition for each scrape, possibly several at
/// once. Returns within about [`POLL`] of the stop, once every connection thread has ended.
pub fn serve(listener: &TcpListener, stop: &AtomicBool, render: &(dyn Fn() -> String + Sync)) {
    serve_with(listener, stop, render, Limits::DEFAULT);
}

/// The cap and deadlines ([`serve`] uses [`Limits::DEFAULT`]; tests try others).
#[derive(Clone, Copy, Debug)]
struct Limits {
    connections: usize,
    head: Duration,
    write: Duration,
}

impl Limits {
    const DEFAULT: Self = Self {
        connections: MAX_CONNECTIONS,
        head: HEAD_DEADLINE,
        write: WRITE_DEADLINE,
    };
}

fn serve_with(
    listener: &TcpListener,
    stop: &AtomicBool,
    render: &(dyn Fn() -> String + Sync),
    limits: Limits,
) {
    let table = Table::default();
    thread::scope(|scope| {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, peer)) => admit(scope, &table, stream, peer, render, limits),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
                Err(err) => {
                    tracing::warn!(%err, "metrics endpoint accept failed");
                    thread::sleep(POLL);
                }
            }
        }
        table.close_all();
    });
}

/// Gives `stream` a slot and a thread, or answers 503 if every slot is being answered.
fn admit<'scope>(
    scope: &'scope Scope<'scope, '_>,
    table: &'scope Table,
    stream: TcpStream,
    peer: SocketAddr,
    render: &'scope (dyn Fn() -> String + Sync),
    limits: Limits,
) {
    let accepted = Instant::now();
    let Some(slot) = table.claim(&stream, limits.connections) else {
        tracing::debug!(%peer, "metrics endpoint full: 503");
        busy(stream);
        return;
    };
    let spawned = thread::Builder::new()
        .name("pinhole-scrape".to_owned())
        .spawn_scoped(scope, move || {
            if let Err(err) = answer(stream, accepted, &slot, render, limits) {
                tracing::debug!(%peer, %err, "metrics client");
            }
        });
    // On failure the closure is dropped: its slot is freed and its stream closed.
    if let Err(err) = spawned {
        tracing::warn!(%err, "metrics endpoint could not start a connection thread");
    }
}

/// The connections being served.
#[derive(Default)]
struct Table {
    conns: Mutex<Conns>,
    /// Notified when a connection ends.
    freed: Condvar,
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    /// In accept order.
    live: Vec<Conn>,
}

struct Conn {
    id: u64,
    phase: Phase,
    /// A handle on the socket, to shut it down from the accepting thread.
    socket: TcpStream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the request head: may be closed to make room.
    Head,
    /// The request is in: being answered.
    Answer,
    /// Shut down (to make room, or at stop); its thread is ending.
    Closed,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for `stream`. At the cap, closes the oldest connection still waiting for its
    /// head and waits (briefly) for its thread to free the slot; `None` if no slot frees.
    fn claim(&self, stream: &TcpStream, cap: usize) -> Option<Slot<'_>> {
        let mut conns = self.lock();
        if conns.live.len() >= cap {
            let victim = conns.live.iter_mut().find(|c| c.phase == Phase::Head)?;
            victim.phase = Phase::Closed;
            let _ = victim.socket.shutdown(Shutdown::Both);
            tracing::debug!(
                "metrics endpoint full: closed the oldest connection still waiting for its request"
            );
            conns = self
                .freed
                .wait_timeout_while(conns, EVICT_WAIT, |c| c.live.len() >= cap)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if conns.live.len() >= cap {
                return None;
            }
        }
        let socket = match stream.try_clone() {
            Ok(socket) => socket,
            Err(err) => {
                tracing::warn!(%err, "metrics endpoint could not track a connection");
                return None;
            }
        };
        let id = conns.next_id;
        conns.next_id += 1;
        conns.live.push(Conn {
            id,
            phase: Phase::Head,
            socket,
        });
        Some(Slot { table: self, id })
    }

    /// At stop: wakes every connection thread blocked on its socket.
    fn close_all(&self) {
        for conn in &mut self.lock().live {
            conn.phase = Phase::Closed;
            let _ = conn.socket.shutdown(Shutdown::Both);
        }
    }
}

/// One connection's entry in the [`Table`], freed when dropped.
struct Slot<'a> {
    table: &'a Table,
    id: u64,
}

impl Slot<'_> {
    /// The request head is in: the connection may no longer be closed to make room. False if
    /// it already was (or the endpoint is stopping): then nothing is to be answered.
    fn start_answer(&self) -> bool {
        let mut conns = self.table.lock();
        match conns.live.iter_mut().find(|c| c.id == self.id) {
            Some(conn) if conn.phase == Phase::Head => {
                conn.phase = Phase::Answer;
                true
            }
            _ => false,
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.table.lock().live.retain(|c| c.id != self.id);
        self.table.freed.notify_all();
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (or `HEAD`: no body).
    Metrics { head: bool },
    /// Another path.
    NotFound,
    /// Another method.
    BadMethod,
    /// Not HTTP.
    Malformed,
}

fn parse_request(head: &[u8]) -> Request {
    let Some(line) = head.split(|b| *b == b'\n').next() else {
        return Request::Malformed;
    };
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Malformed;
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Request::Metrics {
            head: method == "HEAD",
        },
        ("GET" | "HEAD", _) => Request::NotFound,
        _ => Request::BadMethod,
    }
}

/// How reading a request head ended.
enum Head {
    /// The blank line came, or the client finished sending.
    Complete(Vec<u8>),
    /// More than [`MAX_REQUEST`] bytes without one.
    TooLarge,
    /// The deadline passed first.
    Late,
}

fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Head> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::Late);
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(Head::Complete(head)),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if timed_out(&err) => return Ok(Head::Late),
            Err(err) => return Err(err),
        };
        // Only the new bytes and the three before them can complete the blank line.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
        let tail = &head[from..];
        if tail.windows(4).any(|w| w == b"\r\n\r\n") || tail.windows(2).any(|w| w == b"\n\n") {
            return Ok(Head::Complete(head));
        }
    }
}

/// A socket timeout: `EAGAIN` on Linux, `ETIMEDOUT` elsewhere.
fn timed_out(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn answer(
    mut stream: TcpStream,
    accepted: Instant,
    slot: &Slot<'_>,
    render: &(dyn Fn() -> String + Sync),
    limits: Limits,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let head = match read_head(&mut stream, accepted + limits.head)? {
        Head::Complete(head) => head,
        Head::TooLarge => {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
                false,
                Instant::now() + limits.write,
            );
        }
        Head::Late => {
            respond(
                &mut stream,
                "408 Request Timeout",
                "text/plain",
                "request head not received in time\n",
                false,
                Instant::now() + limits.write,
            )?;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head deadline passed",
            ));
        }
    };
    if !slot.start_answer() {
        return Ok(());
    }
    let (status, content_type, body, head_only) = match parse_request(&head) {
        Request::Metrics { head } => ("200 OK", CONTENT_TYPE, render(), head),
        Request::NotFound => (
            "404 Not Found",
            "text/plain",
            "pinhole serves /metrics only\n".to_owned(),
            false,
        ),
        Request::BadMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_owned(),
            false,
        ),
        Request::Malformed => (
            "400 Bad Request",
            "text/plain",
            "not an HTTP request\n".to_owned(),
            false,
        ),
    };
    respond(
        &mut stream,
        status,
        content_type,
        &body,
        head_only,
        Instant::now() + limits.write,
    )
}

/// Answers 503 from the accepting thread. The socket is new, so its send buffer is empty and
/// the short answer goes out without waiting; the deadline is there in case it does not.
fn busy(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false).and_then(|()| {
        respond(
            &mut stream,
            "503 Service Unavailable",
            "text/plain",
            "too many metrics clients; try again\n",
            false,
            Instant::now() + POLL,
        )
    });
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
    deadline: Instant,
) -> io::Result<()> {
    let mut answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        answer.push_str(body);
    }
    write_by(stream, answer.as_bytes(), deadline)
}

/// `write_all` that gives up at `deadline` (a write timeout alone restarts at each write).
fn write_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "answer not written in time",
            ));
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if timed_out(&err) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "answer not written in time",
                ));
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread::JoinHandle;

    /// How long a test client waits for an answer before the test fails (rather than hangs).
    const CLIENT_WAIT: Duration = Duration::from_secs(3);
    const SCRAPE: &str = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(parse_addr("9464"), Ok("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(parse_addr("[::1]:9"), Ok("[::1]:9".parse().unwrap()));
        assert!(parse_addr("localhost:9464").is_err());
    }

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(
            parse_request(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics { head: true }
        );
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::BadMethod
        );
        assert_eq!(parse_request(b"\x16\x03\x01garbage"), Request::Malformed);
    }

    /// `serve_with` on an ephemeral loopback port, in a thread.
    struct Server {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: JoinHandle<()>,
    }

    impl Server {
        fn start(render: impl Fn() -> String + Send + Sync + 'static, limits: Limits) -> Self {
            let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let stop = stop.clone();
                thread::spawn(move || serve_with(&listener, &stop, &render, limits))
            };
            Self { addr, stop, thread }
        }

        fn up(limits: Limits) -> Self {
            Self::start(|| "pinhole_up 1\n".to_owned(), limits)
        }

        /// Sets the stop flag and joins `serve`; how long that took.
        fn stop(self) -> Duration {
            let start = Instant::now();
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().unwrap();
            start.elapsed()
        }
    }

    /// Sends `request` and reads the answer to the end; fails if none comes in [`CLIENT_WAIT`].
    fn fetch(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(CLIENT_WAIT)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        String::from_utf8(read_to_close(&mut stream).expect("no answer in time")).unwrap()
    }

    fn scrape_ok(addr: SocketAddr) {
        let answer = fetch(addr, SCRAPE);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\npinhole_up 1\n"), "{answer}");
    }

    /// What the server sent until it closed the connection (a reset counts as closing: a server
    /// that closes with unread input resets), or `None` if it is still open when the read
    /// timeout set on `stream` passes.
    fn read_to_close(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return Some(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(err) if timed_out(&err) => return None,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(got),
            }
        }
    }

    /// Connections that send nothing.
    fn idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
        (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
    }

    fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
        stream.set_read_timeout(Some(wait)).unwrap();
        read_to_close(stream)
    }

    #[test]
    fn serves_metrics_over_loopback_and_stops() {
        let server = Server::up(Limits::DEFAULT);
        let addr = server.addr;
        let ok = fetch(addr, SCRAPE);
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 13\r\n"), "{ok}");
        assert!(ok.contains("Connection: close\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\npinhole_up 1\n"), "{ok}");
        let head = fetch(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 13\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let missing = fetch(addr, "GET /other HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = fetch(addr, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let tls = fetch(addr, "\x16\x03\x01 hello\r\n\r\n");
        assert!(tls.starts_with("HTTP/1.1 400"), "{tls}");
        let long = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST)
        );
        let long = fetch(addr, &long);
        assert!(long.starts_with("HTTP/1.1 431"), "{long}");
        server.stop();
    }

    /// One client at a time with a 5 s timeout per read: 6 idle connections held a scrape for
    /// 30 s. Now a scrape is answered beside any number of them, the cap's worth and beyond.
    #[test]
    fn scrapes_are_answered_beside_idle_connections() {
        let server = Server::up(Limits::DEFAULT);
        for n in [6, MAX_CONNECTIONS, MAX_CONNECTIONS + 4] {
            let idle = idle(server.addr, n);
            scrape_ok(server.addr);
            scrape_ok(server.addr);
            drop(idle);
        }
        server.stop();
    }

    /// A byte every 300 ms resets any per-read timeout; the head deadline still ends it, and
    /// scrapes are answered meanwhile.
    #[test]
    fn a_slowloris_is_cut_off_at_the_head_deadline() {
        let server = Server::up(Limits::DEFAULT);
        let mut slow = TcpStream::connect(server.addr).unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        let slowloris = thread::spawn(move || {
            let start = Instant::now();
            slow.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut sent = 0;
            while start.elapsed() < Duration::from_secs(15) {
                if slow.write_all(b"X").is_err() {
                    return (Some(Vec::new()), sent, start.elapsed());
                }
                sent += 1;
                if let Some(answer) = read_to_close(&mut slow) {
                    return (Some(answer), sent, start.elapsed());
                }
            }
            (None, sent, start.elapsed())
        });
        let mut scrapes = 0;
        while !slowloris.is_finished() {
            scrape_ok(server.addr);
            scrapes += 1;
            thread::sleep(Duration::from_millis(200));
        }
        let (answer, sent, took) = slowloris.join().unwrap();
        let answer = answer.expect("the slowloris was never disconnected");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(sent >= 3, "only {sent} bytes sent before the cut");
        assert!(took < Duration::from_secs(10), "cut after {took:?}");
        assert!(scrapes >= 1);
        server.stop();
    }

    /// At the cap, each new connection closes the oldest one still waiting for its request
    /// head, and is served; the newer idle ones are left alone.
    #[test]
    fn past_the_cap_the_oldest_idle_connection_is_closed() {
        // A long head deadline, so that only making room closes an idle connection here.
        let limits = Limits {
            connections: 4,
            head: Duration::from_secs(60),
            ..Limits::DEFAULT
        };
        let server = Server::up(limits);
        // The first four fill the slots; the next two close the first two to get theirs.
        let mut conns = idle(server.addr, 6);
        // The scrape closes the third.
        scrape_ok(server.addr);
        for (i, stream) in conns[..3].iter_mut().enumerate() {
            let answer = closed_within(stream, CLIENT_WAIT);
            assert_eq!(answer, Some(Vec::new()), "idle connection {i}");
        }
        for (i, stream) in conns[3..].iter_mut().enumerate() {
            let answer = closed_within(stream, Duration::from_millis(300));
            assert_eq!(answer, None, "idle connection {}", i + 3);
        }
        let took = server.stop();
        assert!(took < Duration::from_secs(1), "stop took {took:?}");
        for stream in &mut conns[3..] {
            assert_eq!(closed_within(stream, CLIENT_WAIT), Some(Vec::new()));
        }
    }

    /// A render that waits until told to go, and counts the renders under way.
    #[derive(Default)]
    struct Gate {
        state: Mutex<(usize, bool)>,
        changed: Condvar,
    }

    impl Gate {
        fn render(&self) -> String {
            let mut state = self.state.lock().unwrap();
            state.0 += 1;
            self.changed.notify_all();
            let (_state, _) = self
                .changed
                .wait_timeout_while(state, Duration::from_secs(10), |s| !s.1)
                .unwrap();
            "pinhole_up 1\n".to_owned()
        }

        fn wait_for(&self, renders: usize) {
            let state = self.state.lock().unwrap();
            let (state, _) = self
                .changed
                .wait_timeout_while(state, Duration::from_secs(5), |s| s.0 < renders)
                .unwrap();
            assert_eq!(state.0, renders);
        }

        fn open(&self) {
            self.state.lock().unwrap().1 = true;
            self.changed.notify_all();
        }
    }

    /// When every slot is being answered, a new client gets 503 at once; once the answers are
    /// out, the slots are free again. Renders run side by side.
    #[test]
    fn past_the_cap_with_every_slot_answering_clients_get_503() {
        let limits = Limits {
            connections: 3,
            ..Limits::DEFAULT
        };
        let gate = Arc::new(Gate::default());
        let server = {
            let gate = gate.clone();
            Server::start(move || gate.render(), limits)
        };
        let addr = server.addr;
        let waiting: Vec<_> = (0..3)
            .map(|_| thread::spawn(move || fetch(addr, SCRAPE)))
            .collect();
        gate.wait_for(3);
        let refused = fetch(addr, SCRAPE);
        assert!(
            refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{refused}"
        );
        gate.open();
        for client in waiting {
            let answer = client.join().unwrap();
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        }
        for _ in 0..5 {
            scrape_ok(addr);
        }
        server.stop();
    }

    /// Idle clients, a half-sent head: `serve` still returns promptly after the stop flag,
    /// and every connection is closed.
    #[test]
    fn stop_ends_serve_promptly_with_idle_clients() {
        let server = Server::up(Limits::DEFAULT);
        let mut clients = idle(server.addr, MAX_CONNECTIONS - 1);
        let mut partial = TcpStream::connect(server.addr).unwrap();
        partial.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        clients.push(partial);
        scrape_ok(server.addr);
        let took = server.stop();
        // Well under the head deadline: the connections were closed, not timed out.
        assert!(took < Duration::from_secs(1), "stop took {took:?}");
        for (i, stream) in clients.iter_mut().enumerate() {
            let answer = closed_within(stream, Duration::from_millis(500));
            assert_eq!(answer, Some(Vec::new()), "client {i}");
        }
    }
}
