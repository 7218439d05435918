//! The `pinhole` binary: parses the command line and runs an adapter.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use pinhole::cli::{
    Cli, Command, GenPcapArgs, LogFormat, MonitorArgs, ObserveArgs, QueryArgs, ReplayArgs,
    RulesArgs, RunArgs, StatsArgs,
};
use pinhole::daemon::control::{self, Question};
use pinhole::daemon::monitor::{self, MonitorOptions};
use pinhole::daemon::{self, RunOptions};
use pinhole::io::nfqueue::QueueConfig;
use pinhole::io::packet::CaptureConfig;
use pinhole::io::packet_ring::RingConfig;
use pinhole::observe::ObserveOptions;
use pinhole::observe::dropcap::DropCaptureConfig;
use pinhole::observe::sink::EventTarget;
use pinhole::output::{Format, RecordWriter};
use pinhole::policy::{DEFAULT_RULES, Policy};
use pinhole::replay::bench::{BenchOptions, Capture};
use pinhole::replay::{ReplayOptions, replay_file};
use pinhole::workload;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.verbose);
    match cli.command {
        Command::Replay(args) => replay(&args),
        Command::GenPcap(args) => gen_pcap(&args),
        Command::CheckRules { files } => check_rules(&files),
        Command::DefaultRules => {
            print!("{DEFAULT_RULES}");
            ExitCode::SUCCESS
        }
        Command::Run(args) => run(&args),
        Command::Monitor(args) => monitor_command(&args),
        Command::Rules(args) => rules(&args),
        Command::Status(args) => ask(Question::Status, &args),
        Command::Sessions(args) => ask(Question::Sessions, &args),
        Command::Pinholes(args) => ask(Question::Pinholes, &args),
        Command::Stats(args) => stats(&args),
        Command::Snapshot(args) => ask(Question::Snapshot, &args),
        Command::Reload(args) => ask(Question::Reload, &args),
        Command::Completions { shell } => {
            pinhole::docs::completions(shell, &mut io::stdout());
            ExitCode::SUCCESS
        }
        Command::ManPages { dir } => match pinhole::docs::write_man_pages(&dir) {
            Ok(pages) => {
                for page in pages {
                    println!("{}", page.display());
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("pinhole man-pages: {}: {err}", dir.display());
                ExitCode::FAILURE
            }
        },
    }
}

fn rules(args: &RulesArgs) -> ExitCode {
    let policy = match &args.rules {
        Some(path) => match daemon::load_policy(path, false) {
            Ok(policy) => policy,
            Err(err) => {
                eprintln!("pinhole rules: {err}");
                return ExitCode::FAILURE;
            }
        },
        None => Policy::embedded_default(),
    };
    match args.kernel.config_for(&policy) {
        Ok(config) => {
            print!("{}", config.script());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("pinhole rules: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let kernel = match args.kernel.config() {
        Ok(kernel) => kernel,
        Err(err) => {
            eprintln!("pinhole run: {err}");
            return ExitCode::FAILURE;
        }
    };
    let options = RunOptions {
        rules: args.rules.clone(),
        queue: QueueConfig {
            max_len: args.queue_maxlen,
            fail_open: kernel.fail_open,
            gso: !args.no_gso,
            rcvbuf: args.rcvbuf,
            ..QueueConfig::default()
        },
        kernel,
        install_rules: args.install_rules,
        kernel_helpers: !args.kernel.no_kernel_helpers,
        flavour: args.iptables,
        no_inspect: args.no_inspect,
        control: args.control.clone(),
        state_file: args.state_file.clone(),
        restore: args.restore,
        observe: observe_options(&args.observe, None, Format::Json),
    };
    match daemon::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pinhole run: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The live modes' observability options; `default_events` is where the event log goes when
/// `--events` is not given.
fn observe_options(
    args: &ObserveArgs,
    default_events: Option<EventTarget>,
    format: Format,
) -> ObserveOptions {
    ObserveOptions {
        events: args
            .events
            .as_deref()
            .map(EventTarget::parse)
            .or(default_events),
        format,
        flows: args.events_flows,
        rate: args.events_rate,
        drops: args.dump_drops.clone().map(|path| DropCaptureConfig {
            path,
            max_bytes: args.dump_drops_size << 20,
            files: args.dump_drops_files,
        }),
        metrics: args.metrics,
    }
}

fn monitor_command(args: &MonitorArgs) -> ExitCode {
    let options = MonitorOptions {
        iface: args.iface.clone(),
        rules: args.rules.clone(),
        capture: CaptureConfig {
            promiscuous: !args.no_promisc,
            rcvbuf: args.rcvbuf,
            ring: (!args.no_ring).then(|| RingConfig::of_mib(args.ring_mib as usize)),
        },
        workers: args.workers as usize,
        verify_checksums: args.verify_checksums,
        observe: observe_options(
            &args.observe,
            Some(EventTarget::Stdout),
            monitor_format(args),
        ),
    };
    match monitor::run(&options) {
        Ok(summary) => {
            let _ = monitor::write_summary(
                &mut io::stderr(),
                &format!("iface:{}", args.iface),
                &summary,
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("pinhole monitor: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The monitor's event-log format: as asked, else text for a person at a terminal (the log
/// goes to standard output and that is a terminal), JSON Lines for files and pipes.
fn monitor_format(args: &MonitorArgs) -> Format {
    args.format.unwrap_or_else(|| {
        let to_stdout = args.observe.events.as_deref().is_none_or(|e| e == "-");
        if to_stdout && io::stdout().is_terminal() {
            Format::Text
        } else {
            Format::Json
        }
    })
}

fn stats(args: &StatsArgs) -> ExitCode {
    if args.prometheus {
        return match control::query(&args.query.control, Question::Metrics) {
            Ok(value) => {
                print!("{}", control::render(Question::Metrics, &value));
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("pinhole: {err}");
                ExitCode::FAILURE
            }
        };
    }
    ask(Question::Stats, &args.query)
}

fn ask(question: Question, args: &QueryArgs) -> ExitCode {
    match control::query(&args.control, question) {
        Ok(value) => {
            if args.json {
                println!("{value}");
            } else {
                print!("{}", control::render(question, &value));
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("pinhole: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: warnings and the daemons' lifecycle (start, stop, reloads, state saved
/// and restored: the `pinhole::lifecycle` target, at info) by default, more with -v. Under
/// systemd (`JOURNAL_STREAM` set) lines carry no timestamp of their own: the journal adds one.
fn init_logging(format: LogFormat, verbose: u8) {
    let level = match verbose {
        0 => format!("warn,{}=info", pinhole::observe::LIFECYCLE),
        1 => "info".to_owned(),
        2 => "debug".to_owned(),
        _ => "trace".to_owned(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr);
    match (format, journal) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Json, _) => builder.json().init(),
    }
}

fn load_policy(rules: Option<&std::path::Path>) -> Result<Arc<Policy>, ExitCode> {
    match rules {
        None => Ok(Arc::new(Policy::embedded_default())),
        Some(path) => Policy::from_file(path).map(Arc::new).map_err(|errors| {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }),
    }
}

fn replay(args: &ReplayArgs) -> ExitCode {
    let policy = match load_policy(args.rules.as_deref()) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    let stdout = io::stdout();
    let format = args.format.unwrap_or(if stdout.is_terminal() {
        Format::Text
    } else {
        Format::Json
    });
    if args.bench {
        return replay_bench(args, &policy, format);
    }
    let mut lock = io::BufWriter::new(stdout.lock());
    let options = ReplayOptions {
        verdicts: args.verdicts,
        flows: args.flows,
        verify_checksums: args.verify_checksums,
    };
    let mut failed = false;
    for path in &args.pcaps {
        let name = path.display().to_string();
        let mut writer = RecordWriter::new(&mut lock, format);
        if let Err(err) = replay_file(path, &name, &policy, options, &mut writer) {
            if let pinhole::replay::ReplayError::Output(io_err) = &err
                && io_err.kind() == io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            let _ = lock.flush();
            eprintln!("pinhole replay: {err}");
            failed = true;
        }
    }
    if lock.flush().is_err() {
        return ExitCode::FAILURE;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn replay_bench(args: &ReplayArgs, policy: &Arc<Policy>, format: Format) -> ExitCode {
    let options = BenchOptions {
        reps: args.reps,
        workers: args.workers,
        verify_checksums: args.verify_checksums,
    };
    for path in &args.pcaps {
        let name = path.display().to_string();
        let capture = match Capture::load(path) {
            Ok(capture) => capture,
            Err(err) => {
                eprintln!("pinhole replay: {err}");
                return ExitCode::FAILURE;
            }
        };
        if capture.truncated {
            tracing::warn!(
                file = name,
                "capture ends inside a record; benchmarking the complete packets"
            );
        }
        let report = pinhole::replay::bench::bench(&capture, policy, options);
        let text = match format {
            Format::Text => report.render_text(&name),
            Format::Json => report.to_json(&name) + "\n",
        };
        if io::stdout().write_all(text.as_bytes()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn gen_pcap(args: &GenPcapArgs) -> ExitCode {
    let params = workload::Params {
        flows: args.flows,
        packets: args
            .packets
            .unwrap_or_else(|| u64::from(args.flows).saturating_mul(10)),
        rate: args.rate,
        seed: args.seed,
    };
    let file = match std::fs::File::create(&args.output) {
        Ok(file) => file,
        Err(err) => {
            eprintln!("pinhole gen-pcap: {}: {err}", args.output.display());
            return ExitCode::FAILURE;
        }
    };
    match workload::write_pcap(params, file) {
        Ok(summary) => {
            print!("{}", summary.render(&args.output.display().to_string()));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("pinhole gen-pcap: {}: {err}", args.output.display());
            ExitCode::FAILURE
        }
    }
}

fn check_rules(files: &[std::path::PathBuf]) -> ExitCode {
    let mut ok = true;
    for path in files {
        match Policy::from_file(path) {
            Ok(policy) => println!(
                "{}: ok ({} zones, {} rules, default {})",
                path.display(),
                policy.zones.len(),
                policy.rules.len(),
                match policy.default_action {
                    pinhole::policy::Action::Allow => "allow",
                    pinhole::policy::Action::Deny => "deny",
                }
            ),
            Err(errors) => {
                eprintln!("{errors}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
