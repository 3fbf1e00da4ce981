//! The accept loop of the tests' small servers: connections handed one at a time to a
//! handler on a thread of its own, for a bounded time and number, until dropped.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Hands each connection `listener` accepts to `handle`, for at most `lifetime` and
    /// `max` connections.
    pub fn start(
        listener: TcpListener,
        lifetime: Duration,
        max: usize,
        mut handle: impl FnMut(TcpStream) + Send + 'static,
    ) -> Acceptor {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let began = Instant::now();
            let mut handled = 0;
            while !stopped.load(Ordering::Relaxed) && began.elapsed() < lifetime && handled < max {
                match listener.accept() {
                    Ok((stream, _)) => {
                        handled += 1;
                        let _ = stream.set_nonblocking(false);
                        handle(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Acceptor {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
