//! The `t5serve` command line: parse flags, build the config, start logging, serve.

use clap::{Parser, Subcommand};
use t5serve::config::{Config, LogFormat, Overrides};
use tracing_subscriber::EnvFilter;

#[cfg(feature = "alloc-count")]
#[global_allocator]
static ALLOCATOR: t5serve::alloc_count::Counting = t5serve::alloc_count::Counting;

#[derive(Parser)]
#[command(name = "t5serve", version, about = "HTTP inference service for T5-family models on ONNX Runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a model over HTTP (with no --model, the bundled one)
    #[command(
        after_help = "Every flag also reads its T5SERVE_* environment variable; flags override the environment, \
which overrides the config file. translate_pairs (a list of {source, target, template} tables) is set in the \
config file only; config/default.toml documents every key."
    )]
    Serve(Box<Overrides>),
    /// Answer a JSONL file (t5serve's request shapes or OpenAI's batch format) with the serving
    /// engine, in-process: answers as lines in --output, a progress bar, resume on rerun
    #[command(after_help = "Every serve flag that applies (model, threads, lanes, batch size, memory budget...) is \
taken, with its T5SERVE_* variable and the config file. Exit status: 0 every line answered without error, 1 some \
answers are errors, 2 the run could not start, 130 stopped by a signal before the end (run again to go on).")]
    Batch(Box<t5serve::batch::BatchArgs>),
    /// Print, as JSON, this CPU's instruction sets that decide ONNX Runtime's kernels and the int8
    /// kernel they select (what GET /v1/models reports as "cpu")
    Cpu,
}

/// Logs go to stdout when serving; a batch job writes them to stderr, beside its progress, and
/// with a progress bar keeps them to warnings unless RUST_LOG asks for more.
fn init_logging(format: LogFormat, batch: bool) {
    use std::io::IsTerminal;
    // ort logs every session option at info level; keep it to warnings unless asked.
    let quiet = batch && std::io::stderr().is_terminal();
    let default = if quiet { "warn" } else { "info,ort=warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (format, batch) {
        (LogFormat::Json, false) => builder.json().init(),
        (LogFormat::Json, true) => builder.json().with_writer(std::io::stderr).init(),
        (LogFormat::Pretty, false) => builder.init(),
        (LogFormat::Pretty, true) => builder.with_writer(std::io::stderr).init(),
    }
}

/// glibc raises its mmap threshold each time a large mmapped block is freed, so later large blocks
/// (key/value cache gathers when rows join or leave) come from the heap arenas instead, and the
/// heap fragments: resident memory crept up 12-24% over 10,000 requests (bench/memory.sh). With
/// the threshold fixed at glibc's initial 128 KiB, large blocks go back to the system when freed
/// and resident memory stays flat (+0.4%). `MALLOC_MMAP_THRESHOLD_` in the environment wins.
fn fix_malloc_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it runs before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

fn main() -> std::process::ExitCode {
    fix_malloc_mmap_threshold();
    let cli = Cli::parse();
    let (overrides, batch) = match cli.command {
        Command::Serve(overrides) => (*overrides, None),
        Command::Batch(args) => (args.serve.clone(), Some(args)),
        Command::Cpu => {
            println!("{}", t5serve::model::cpu::host().report());
            return std::process::ExitCode::SUCCESS;
        }
    };
    let config = match Config::load(&overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("t5serve: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.log_format, batch.is_some());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(t5serve::plan::http_threads(&config, t5serve::plan::cores()))
        .max_blocking_threads(config.tokenizer_threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("t5serve: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(args) = batch {
        return match runtime.block_on(t5serve::batch::run(config, *args)) {
            Ok(summary) => {
                tracing::info!(?summary, "batch done");
                eprintln!("t5serve batch: {summary}");
                std::process::ExitCode::from(summary.exit_code())
            }
            Err(e) => {
                eprintln!("t5serve batch: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    match runtime.block_on(t5serve::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
