//! `t5serve batch`: answers a JSONL file with the server's own engine, in-process. Each line goes
//! to the router as an HTTP request would (the same validation, queue, batching, decode loop and
//! JSON), without a socket. At most `read_ahead` lines are in flight, so memory stays flat on a
//! file of any size. Answers are written as they finish, each with its line's id and number; a
//! rerun over the same output resumes (`record::resume`). SIGINT or SIGTERM stops the reading and
//! lets the rows in flight finish (a second signal cancels them); the file is left whole.

pub mod line;
pub mod progress;
pub mod record;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::http::{Request, header};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::config::{Config, Overrides};
use line::{BatchTask, Job, LineError};
use progress::{Progress, Summary};
use record::Answer;

#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    /// JSONL file to answer: one request per line, in t5serve's shape for --task or OpenAI's batch
    /// request shape (custom_id, method, url, body)
    #[arg(long)]
    pub input: PathBuf,
    /// Where the answers go, one JSON line each in the order they finish; an existing file is
    /// resumed: the lines it answers are skipped
    #[arg(long)]
    pub output: PathBuf,
    /// Task of the lines in t5serve's shape (a line's own "task" key overrides it)
    #[arg(long, value_enum, default_value = "generate")]
    pub task: BatchTask,
    /// Lines in flight at most (read ahead of the answers written) [default: 4 x max_batch_size]
    #[arg(long)]
    pub read_ahead: Option<usize>,
    #[command(flatten)]
    pub serve: Overrides,
}

/// What goes to the writer.
enum Done {
    Record(String, bool),
    Skipped,
}

/// Loads the models and answers the file.
pub async fn run(config: Config, args: BatchArgs) -> anyhow::Result<Summary> {
    if let (Ok(i), Ok(o)) = (std::fs::canonicalize(&args.input), std::fs::canonicalize(&args.output))
        && i == o
    {
        anyhow::bail!("--output is the input file {}: the answers would overwrite it", args.input.display());
    }
    let out = args.output.clone();
    let resume = tokio::task::spawn_blocking(move || record::resume(&out)).await??;
    if resume.retried > 0 || resume.cut_bytes > 0 {
        tracing::info!(
            again = resume.retried,
            torn_bytes = resume.cut_bytes,
            "earlier answers to redo taken out of the output"
        );
    }
    let input = args.input.clone();
    let lines = tokio::task::spawn_blocking(move || count_lines(&input)).await??;
    let service = crate::build(&config).await?;
    let state = service.state.clone();
    // As the server does before it turns ready: the first run of every graph allocates.
    state.warm_up().await.map_err(|e| anyhow::anyhow!("the warm-up failed: {e}"))?;
    let share = crate::http::pipeline::model_share(config.max_concurrent_requests, state.models.ready_count());
    let read_ahead = args.read_ahead.unwrap_or(4 * config.max_batch_size).clamp(1, share);
    let tokens = move || -> u64 {
        state.models.stats().iter().map(|(_, s)| crate::scheduler::SchedulerStats::get(&s.generated_tokens)).sum()
    };
    let progress = Progress::new(lines, tokens(), std::io::stderr().is_terminal());
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.output)
        .await
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let (tx, rx) = mpsc::channel(read_ahead);
    let writer = tokio::spawn(write_answers(rx, file, progress, tokens.clone()));
    tracing::info!(input = %args.input.display(), lines, read_ahead, answered_before = resume.answered.len(), "batch started");

    let reader =
        tokio::fs::File::open(&args.input).await.with_context(|| format!("cannot read {}", args.input.display()))?;
    let sender = Sender { app: service.app, auth: config.api_key.as_ref().map(|k| format!("Bearer {}", k.0).into()) };
    let failed_before = resume.failed as u64;
    let feed = Feed { task: args.task, max_line: config.max_body_bytes, read_ahead, answered: resume.answered };
    let (complete, cancelled) = feed.run(tokio::io::BufReader::new(reader), sender, tx).await?;
    let summary = writer.await.context("the answer writer")??.finish(tokens());
    Ok(Summary { complete, cancelled, failed_before, ..summary })
}

/// Reads lines and sends them, at most `read_ahead` at once.
struct Feed {
    task: BatchTask,
    max_line: usize,
    read_ahead: usize,
    answered: std::collections::HashSet<String>,
}

impl Feed {
    /// Returns whether the whole file was answered, and how many rows a second signal cancelled.
    async fn run(
        self,
        mut reader: impl AsyncBufRead + Unpin,
        sender: Sender,
        tx: mpsc::Sender<Done>,
    ) -> anyhow::Result<(bool, usize)> {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.read_ahead));
        let mut in_flight = tokio::task::JoinSet::new();
        let (mut buf, mut at, mut stopped) = (Vec::new(), 0usize, false);
        let mut signal = std::pin::pin!(stop_signal());
        loop {
            let permit = tokio::select! {
                biased;
                () = &mut signal => {
                    stopped = true;
                    break;
                }
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            while in_flight.try_join_next().is_some() {}
            let Some(read) = next_line(&mut reader, &mut buf, self.max_line).await? else { break };
            at += 1;
            let job = match read {
                Read::TooLong(bytes) => Err(LineError::too_long(at, bytes, self.max_line)),
                Read::Line => match std::str::from_utf8(&buf) {
                    Ok(text) if text.trim().is_empty() => continue,
                    Ok(text) => line::parse(at, text, self.task),
                    Err(_) => Err(LineError::not_text(at)),
                },
            };
            let key = match &job {
                Ok(job) => job.key(),
                Err(e) => line::key(e.format, &e.id, e.line),
            };
            if self.answered.contains(&key) {
                let _ = tx.send(Done::Skipped).await;
                continue;
            }
            let (sender, tx) = (sender.clone(), tx.clone());
            in_flight.spawn(async move {
                let done = match job {
                    Ok(job) => {
                        let answer = sender.send(&job).await;
                        let ok = answer.status == 200;
                        Done::Record(record::answered(&job, answer), ok)
                    }
                    Err(e) => Done::Record(record::refused(&e), false),
                };
                let _ = tx.send(done).await;
                drop(permit);
            });
        }
        if stopped {
            tracing::warn!(
                in_flight = in_flight.len(),
                "signal: no more lines read; the rows in flight finish (a second signal cancels them)"
            );
            signal.set(stop_signal());
        }
        let mut cancelled = 0;
        loop {
            tokio::select! {
                joined = in_flight.join_next() => match joined {
                    None => break,
                    Some(Err(e)) if e.is_cancelled() => cancelled += 1,
                    Some(_) => {}
                },
                () = &mut signal => {
                    if stopped {
                        tracing::warn!(in_flight = in_flight.len(), "second signal: cancelling the rows in flight");
                        in_flight.abort_all();
                    } else {
                        tracing::warn!(in_flight = in_flight.len(), "signal: the rows in flight finish (a second signal cancels them)");
                    }
                    stopped = true;
                    signal.set(stop_signal());
                }
            }
        }
        Ok((!stopped || cancelled == 0 && reader_done(&mut reader).await, cancelled))
    }
}

/// Whether nothing is left to read (a stop after the last line still leaves a complete file).
async fn reader_done(reader: &mut (impl AsyncBufRead + Unpin)) -> bool {
    matches!(reader.fill_buf().await, Ok(rest) if rest.is_empty())
}

/// Sends jobs to the router in-process.
#[derive(Clone)]
struct Sender {
    app: axum::Router,
    auth: Option<Arc<str>>,
}

impl Sender {
    async fn send(&self, job: &Job) -> Answer {
        let mut request = Request::post(job.path).header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.auth {
            request = request.header(header::AUTHORIZATION, auth.as_ref());
        }
        let request = request.body(Body::from(job.body.clone())).expect("a path and headers that parse");
        let Ok(response) = self.app.clone().oneshot(request).await;
        let status = response.status().as_u16();
        let request_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(String::from);
        let body = match axum::body::to_bytes(response.into_body(), usize::MAX).await {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
            }
            Err(e) => {
                serde_json::json!({"error": format!("the answer could not be read: {e}"), "error_type": "internal"})
            }
        };
        Answer { status, request_id, body }
    }
}

/// Writes each answer as one line as it comes; flushes whenever none is waiting.
async fn write_answers(
    mut rx: mpsc::Receiver<Done>,
    file: tokio::fs::File,
    mut progress: Progress,
    tokens: impl Fn() -> u64,
) -> anyhow::Result<Progress> {
    let mut out = tokio::io::BufWriter::new(file);
    let mut tick = tokio::time::interval(progress::LOG_EVERY);
    loop {
        let done = tokio::select! {
            done = rx.recv() => done,
            _ = tick.tick() => {
                progress.tick(tokens());
                continue;
            }
        };
        match done {
            None => break,
            Some(Done::Skipped) => progress.skipped(),
            Some(Done::Record(record, ok)) => {
                out.write_all(record.as_bytes()).await?;
                out.write_all(b"\n").await?;
                progress.row(ok, tokens());
            }
        }
        if rx.is_empty() {
            out.flush().await?;
        }
    }
    out.flush().await?;
    out.get_mut().sync_data().await?;
    Ok(progress)
}

/// How a line was read.
enum Read {
    Line,
    /// Longer than the limit: read to its end and dropped.
    TooLong(usize),
}

/// Reads the next line into `buf` without its line end, keeping at most `limit` bytes; `None` at
/// the end of the input.
async fn next_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Option<Read>> {
    buf.clear();
    let (mut len, mut any) = (0usize, false);
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            break;
        }
        any = true;
        let end = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..end.unwrap_or(chunk.len())];
        len += part.len();
        if len <= limit {
            buf.extend_from_slice(part);
        }
        let used = end.map_or(chunk.len(), |i| i + 1);
        reader.consume(used);
        if end.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if len > limit {
        buf.clear();
        return Ok(Some(Read::TooLong(len)));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(Read::Line))
}

/// The non-empty lines of a file (the progress bar's length).
fn count_lines(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let (mut count, mut blank) = (0u64, true);
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        for &b in chunk {
            match b {
                b'\n' => {
                    count += u64::from(!blank);
                    blank = true;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => blank = false,
            }
        }
        let n = chunk.len();
        reader.consume(n);
    }
    Ok(count + u64::from(!blank))
}

/// Resolves at SIGINT or SIGTERM.
async fn stop_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM can be caught");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(text: &[u8], limit: usize) -> Vec<Result<String, usize>> {
        let mut reader = tokio::io::BufReader::with_capacity(4, text);
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        while let Some(read) = next_line(&mut reader, &mut buf, limit).await.unwrap() {
            out.push(match read {
                Read::Line => Ok(String::from_utf8(buf.clone()).unwrap()),
                Read::TooLong(n) => Err(n),
            });
        }
        out
    }

    #[tokio::test]
    async fn lines_are_read_whole_or_dropped_when_over_the_limit() {
        let got = lines(b"ab\r\n0123456789\n\nlast", 8).await;
        assert_eq!(got, [Ok("ab".to_string()), Err(10), Ok(String::new()), Ok("last".to_string())]);
        assert_eq!(lines(b"", 8).await, []);
    }

    #[test]
    fn the_bar_counts_non_empty_lines() {
        let path = std::env::temp_dir().join(format!("t5serve-count-{}.jsonl", std::process::id()));
        std::fs::write(&path, "a\n\n  \nb\r\nc").unwrap();
        assert_eq!(count_lines(&path).unwrap(), 3);
        std::fs::write(&path, "a\nb\n").unwrap();
        assert_eq!(count_lines(&path).unwrap(), 2);
        std::fs::remove_file(&path).unwrap();
    }
}
