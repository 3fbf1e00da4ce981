use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use blockcast::serve::{self, ServeOptions};
use clap::Args;

use super::print_out;

/// Serve a store directory and its indexes over HTTP until SIGINT or SIGTERM.
#[derive(Args)]
pub struct ServeArgs {
    /// The directory to serve (a store, with indexes beside or inside it).
    dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Milliseconds to wait before every answer, to stand in for a slow link.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    delay: u64,
    /// Connections served at once; when all are taken, the one idle the longest is
    /// closed for a new client, and without an idle one new clients wait.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Log one line per request on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Milliseconds a client may take to send a request's headers.
    #[arg(long, value_name = "MS", hide = true)]
    header_timeout: Option<u64>,
    /// Milliseconds a connection may stay idle between requests.
    #[arg(long, value_name = "MS", hide = true)]
    idle_timeout: Option<u64>,
    /// Milliseconds requests in flight get to finish after SIGINT or SIGTERM.
    #[arg(long, value_name = "MS", hide = true)]
    drain_timeout: Option<u64>,
    /// Tests only: requests for this path block their thread for good.
    #[arg(long, value_name = "PATH", hide = true)]
    stall_for_tests: Option<PathBuf>,
}

pub fn run(a: ServeArgs) -> Result<()> {
    if !a.dir.is_dir() {
        anyhow::bail!("{} is not a directory", a.dir.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the server runtime")?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        // Printed even with --quiet: with port 0 it is the only way to learn the port.
        print_out(&format!("serving {} on http://{addr}", a.dir.display()))?;
        let ms = |given: Option<u64>, default| given.map_or(default, Duration::from_millis);
        let opts = ServeOptions {
            root: a.dir.clone(),
            delay: Duration::from_millis(a.delay),
            max_connections: a.max_connections,
            header_timeout: ms(a.header_timeout, ServeOptions::HEADER_TIMEOUT),
            idle_timeout: ms(a.idle_timeout, ServeOptions::IDLE_TIMEOUT),
            drain_timeout: ms(a.drain_timeout, ServeOptions::DRAIN_TIMEOUT),
            verbose: a.verbose,
            stall: a.stall_for_tests,
        };
        serve::serve(listener, opts, stop_signal()?)
            .await
            .with_context(|| format!("serving {}", a.dir.display()))
    });
    // Threads still blocked in the filesystem (a hung network mount) must not keep the
    // process alive after the drain: they are not waited for.
    runtime.shutdown_background();
    served
}

/// Completes on the first SIGINT or SIGTERM.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
