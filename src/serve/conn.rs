//! What each connection is doing, so that a silent or idle one is closed in time and,
//! when every slot is taken, an idle keep-alive connection makes room for a new client.
//!
//! A connection is in one of three phases: receiving a request's headers (from its
//! accept, or from the first byte after an answer), busy with a request, or idle between
//! requests. Hyper's own header timer cannot tell the first from the last (it runs from
//! the end of one answer), so both are bounded here.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a connection may stay in each phase that waits on the client.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// To send a request's headers, counted from the accept or the request's first byte.
    pub header: Duration,
    /// Between the end of an answer and the next request's first byte.
    pub idle: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Head(Instant),
    /// With the number of answers whose bodies hyper still holds (one, unless it drops
    /// a body after reading the next request).
    Busy(usize),
    Idle(Instant),
}

pub struct Conn {
    phase: Mutex<Phase>,
    /// Asked to close if idle, to make room for a new client.
    shed: AtomicBool,
    /// Woken on every change of phase and on `shed`.
    wake: Notify,
}

/// The open connections.
#[derive(Default)]
pub struct Conns {
    live: Mutex<Vec<Arc<Conn>>>,
    idled: Notify,
}

/// A connection's place in [`Conns`], given up when dropped.
pub struct Registered {
    conns: Arc<Conns>,
    pub conn: Arc<Conn>,
}

/// Held while a request is being answered, until hyper drops the answer's body.
pub struct Busy {
    conns: Arc<Conns>,
    conn: Arc<Conn>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent even if a holder panicked: every update is one store.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Conns {
    pub fn register(self: &Arc<Self>) -> Registered {
        let conn = Arc::new(Conn {
            phase: Mutex::new(Phase::Head(Instant::now())),
            shed: AtomicBool::new(false),
            wake: Notify::new(),
        });
        lock(&self.live).push(conn.clone());
        Registered {
            conns: self.clone(),
            conn,
        }
    }

    /// Asks the connection idle the longest to close; false if none is idle. While one
    /// asked before is still open, asks no other: a slot is on its way.
    pub fn shed_idlest(&self) -> bool {
        let live = lock(&self.live);
        if live.iter().any(|c| c.shed.load(Ordering::Acquire)) {
            return true;
        }
        let idlest = live
            .iter()
            .filter_map(|c| match *lock(&c.phase) {
                Phase::Idle(since) => Some((since, c)),
                _ => None,
            })
            .min_by_key(|(since, _)| *since);
        match idlest {
            Some((_, conn)) => {
                conn.shed.store(true, Ordering::Release);
                conn.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Completes when some connection has gone idle (since the last call, or from now).
    pub async fn idled(&self) {
        self.idled.notified().await
    }

    /// Marks `conn` busy until the returned guard is dropped.
    pub fn busy(self: &Arc<Self>, conn: &Arc<Conn>) -> Busy {
        conn.update(|phase| match phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
        Busy {
            conns: self.clone(),
            conn: conn.clone(),
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.conns.live).retain(|c| !Arc::ptr_eq(c, &self.conn));
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn.update(|phase| match phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
        self.conns.idled.notify_one();
    }
}

impl Conn {
    fn update(&self, change: impl FnOnce(Phase) -> Phase) {
        let mut phase = lock(&self.phase);
        *phase = change(*phase);
        if !matches!(*phase, Phase::Idle(_)) {
            // No longer idle: a request to close it to make room is void.
            self.shed.store(false, Ordering::Release);
        }
        drop(phase);
        self.wake.notify_one();
    }

    /// Bytes arrived: after an answer they begin the next request's headers.
    fn received(&self) {
        let mut phase = lock(&self.phase);
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
            self.shed.store(false, Ordering::Release);
            drop(phase);
            self.wake.notify_one();
        }
    }

    /// `None` when the connection is to be closed now, else when to look again (`None`
    /// inside: not before the phase changes).
    fn verdict(&self, limits: &Limits, now: Instant) -> Option<Option<Instant>> {
        let shed = self.shed.load(Ordering::Acquire);
        let deadline = match *lock(&self.phase) {
            Phase::Busy(_) => return Some(None),
            Phase::Idle(_) if shed => return None,
            Phase::Idle(since) => since + limits.idle,
            Phase::Head(since) => since + limits.header,
        };
        (now < deadline).then_some(Some(deadline))
    }

    /// Runs `serving` (the connection's HTTP exchange) until it ends, or until the
    /// connection is to be closed, which dropping `serving` does.
    pub async fn watch(&self, limits: Limits, serving: impl Future) {
        tokio::pin!(serving);
        loop {
            let Some(deadline) = self.verdict(&limits, Instant::now()) else {
                return;
            };
            let expiry = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut serving => return,
                _ = expiry => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// A connection's socket, telling [`Conn`] when bytes arrive.
pub struct Watched<S> {
    pub inner: S,
    pub conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.received();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header: Duration::from_secs(2),
        idle: Duration::from_secs(5),
    };

    #[test]
    fn each_phase_has_its_own_bound_and_only_idle_ones_are_shed() {
        let conns = Arc::new(Conns::default());
        let a = conns.register();
        let b = conns.register();
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        *lock(&a.conn.phase) = Phase::Head(t0);
        assert_eq!(a.conn.verdict(&LIMITS, secs(1)), Some(Some(secs(2))));
        assert_eq!(a.conn.verdict(&LIMITS, secs(2)), None);

        let busy = conns.busy(&a.conn);
        let next = conns.busy(&a.conn);
        drop(busy);
        assert_eq!(a.conn.verdict(&LIMITS, secs(100)), Some(None));
        assert!(
            !conns.shed_idlest(),
            "a busy or new connection is never shed"
        );
        drop(next);
        assert!(matches!(*lock(&a.conn.phase), Phase::Idle(_)));
        *lock(&a.conn.phase) = Phase::Idle(t0);
        assert_eq!(a.conn.verdict(&LIMITS, secs(4)), Some(Some(secs(5))));
        assert_eq!(a.conn.verdict(&LIMITS, secs(5)), None);
        a.conn.received();
        assert!(matches!(*lock(&a.conn.phase), Phase::Head(_)));

        *lock(&a.conn.phase) = Phase::Idle(secs(1));
        *lock(&b.conn.phase) = Phase::Idle(t0);
        assert!(conns.shed_idlest());
        assert_eq!(b.conn.verdict(&LIMITS, t0), None, "the longest idle goes");
        assert_eq!(a.conn.verdict(&LIMITS, t0), Some(Some(secs(6))));

        drop(b);
        assert_eq!(lock(&conns.live).len(), 1);
    }

    /// A client waiting for a slot may ask again before the connection it had closed is
    /// gone (another went idle meanwhile): one connection closes, not two.
    #[test]
    fn a_pending_shed_is_not_doubled_and_is_void_once_the_connection_is_busy() {
        let conns = Arc::new(Conns::default());
        let (a, b) = (conns.register(), conns.register());
        let t0 = Instant::now();
        *lock(&a.conn.phase) = Phase::Idle(t0 + Duration::from_secs(1));
        *lock(&b.conn.phase) = Phase::Idle(t0);
        assert!(conns.shed_idlest());
        assert!(conns.shed_idlest());
        assert_eq!(b.conn.verdict(&LIMITS, t0), None);
        assert!(
            a.conn.verdict(&LIMITS, t0).is_some(),
            "a second one was shed"
        );

        // The one asked to close became busy instead: the next ask picks another.
        let busy = conns.busy(&b.conn);
        assert!(conns.shed_idlest());
        assert_eq!(a.conn.verdict(&LIMITS, t0), None);
        drop(busy);
    }
}
