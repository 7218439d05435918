//! Readiness notification for systemd (`Type=notify`, sd_notify(3)): one datagram to the Unix
//! socket named by `$NOTIFY_SOCKET` per state change. Without the variable (not started by
//! systemd) every call does nothing.
//!
//! The protocol is newline-separated `KEY=VALUE` assignments in one datagram; a path starting
//! with `@` names a socket in the abstract namespace (systemd's `src/libsystemd/sd-daemon`).
//! `READY=1` is sent once the daemon does its job (for `pinhole run`: the queues are bound and
//! the kernel rules installed), so `systemctl start` returns when traffic is inspected, and a unit
//! ordered after pinhole starts after that; `RELOADING=1` ... `READY=1` brackets a SIGHUP reload,
//! `STOPPING=1` starts the stop.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// The variable systemd sets for `Type=notify` services.
pub const ENV: &str = "NOTIFY_SOCKET";

/// Where to send notifications, read once from `$NOTIFY_SOCKET`.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`; inert when it is unset or cannot be used (logged).
    pub fn from_env() -> Self {
        match std::env::var_os(ENV) {
            Some(path) => Self::to(Path::new(&path)).unwrap_or_else(|err| {
                tracing::warn!(socket = %Path::new(&path).display(), %err, "cannot notify systemd");
                Notifier { target: None }
            }),
            None => Notifier { target: None },
        }
    }

    /// A notifier for the socket at `path` (`@name` for the abstract namespace).
    pub fn to(path: &Path) -> io::Result<Self> {
        let text = path.as_os_str().as_encoded_bytes();
        let addr = match text.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(path)?,
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Notifier {
            target: Some((socket, addr)),
        })
    }

    /// Sends `state` (`KEY=VALUE` lines). A failure is logged, never fatal: systemd then times
    /// the start out, which says more than a daemon refusing to run would.
    pub fn send(&self, state: &str) {
        if let Some((socket, addr)) = &self.target
            && let Err(err) = socket.send_to_addr(state.as_bytes(), addr)
        {
            tracing::warn!(%err, state, "cannot notify systemd");
        }
    }

    /// `READY=1` with a status line for `systemctl status`.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// `RELOADING=1` with the monotonic time systemd expects alongside it.
    pub fn reloading(&self) {
        let usec = super::monotonic_now().as_nanos() / 1000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_each_state_as_one_datagram_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("pinhole-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to(&path).unwrap();
        notifier.ready("inspecting 2 queues");
        notifier.reloading();
        notifier.stopping();
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=inspecting 2 queues");
        let n = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
        assert!(
            text["RELOADING=1\nMONOTONIC_USEC=".len()..]
                .parse::<u64>()
                .is_ok(),
            "{text}"
        );
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn abstract_names_start_with_an_at_sign() {
        let name = format!("pinhole-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        Notifier::to(Path::new(&format!("@{name}")))
            .unwrap()
            .stopping();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
