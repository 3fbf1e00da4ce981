//! Who may change a store at once: any number of publishers (`make` and `pack` into a
//! directory, `push` to an S3 prefix, `check --repair`), or one prune, never both. A
//! publisher decides what to reuse before its index exists, so a prune that ran between
//! that decision and the index could remove what the index names; a prune waits until no
//! publisher holds the store, and a publisher until no prune does.
//!
//! On a local directory this is an advisory lock (`flock`) on `STORE/.lock`: shared by
//! publishers, exclusive for a prune; the kernel drops it with its holder, so a killed
//! process never blocks the store. Elsewhere (an S3 prefix) each holder writes a lease,
//! `leases/<random>.publish` or `leases/<random>.prune`, then lists the other kind: a
//! publisher that finds a live prune lease removes its own and waits; a prune that finds
//! a live publisher lease waits for it to go. Of two that start at once, at least one sees
//! the other (a listing after a write sees that write), and the publisher gives way, so
//! they never both go on. A lease says until when it holds and is renewed while its
//! holder runs; one not renewed (its holder died) stops counting when it expires. See
//! `docs/FORMAT.md`, Changing a store while others read and write it.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use super::{Listed, PruneStore, Warn};
use crate::error::{Error, IoContext, Result};

/// How long a lease holds unless renewed.
pub const LEASE_FOR: Duration = Duration::from_secs(300);
/// How often a holder renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(60);
/// The directory of leases in a store.
pub const LEASES: &str = "leases";
/// The lock file of a local store (hidden: readers ignore it).
pub const LOCK_FILE: &str = ".lock";
/// The most bytes of a lease read.
const LEASE_MAX: u64 = 4096;
/// How often a waiting holder looks again.
const POLL: Duration = Duration::from_millis(250);
/// How long a publisher waits for a prune to finish before it gives up.
const PUBLISHER_WAIT: Duration = Duration::from_secs(3600);

/// What a lease holds the store for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Publish,
    Prune,
}

impl Role {
    fn suffix(self) -> &'static str {
        match self {
            Role::Publish => ".publish",
            Role::Prune => ".prune",
        }
    }

    fn other(self) -> Role {
        match self {
            Role::Publish => Role::Prune,
            Role::Prune => Role::Publish,
        }
    }
}

/// A lease's contents.
#[derive(Serialize, Deserialize)]
struct Lease {
    /// Seconds since the epoch until which it holds.
    expires: u64,
    /// Who holds it, for people reading the store.
    holder: String,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lease_bytes() -> Vec<u8> {
    let lease = Lease {
        expires: now_secs() + LEASE_FOR.as_secs(),
        holder: format!(
            "{} pid {}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim(),
            std::process::id()
        ),
    };
    serde_json::to_vec(&lease).unwrap_or_default()
}

/// The store held: released when dropped (or by [`Hold::release`]).
pub struct Hold {
    inner: Inner,
}

enum Inner {
    Lock(File),
    Lease(Renewed),
    None,
}

/// A lease renewed by a thread until released.
struct Renewed {
    store: Arc<dyn PruneStore>,
    name: String,
    stop: Arc<(Mutex<bool>, Condvar)>,
    renewer: Option<JoinHandle<()>>,
}

impl Hold {
    /// Holds `store` for a publisher, waiting while a prune holds it.
    pub fn publish(store: Arc<dyn PruneStore>, warn: &Warn) -> Result<Hold> {
        Self::take(store, Role::Publish, PUBLISHER_WAIT, warn)
    }

    /// Holds `store` for a prune, waiting at most `wait` for publishers to finish.
    pub fn prune(store: Arc<dyn PruneStore>, wait: Duration, warn: &Warn) -> Result<Hold> {
        Self::take(store, Role::Prune, wait, warn)
    }

    fn take(store: Arc<dyn PruneStore>, role: Role, wait: Duration, warn: &Warn) -> Result<Hold> {
        let inner = match store.local() {
            Some(local) => Inner::Lock(lock(&local.dir().join(LOCK_FILE), role, wait, warn)?),
            None => Inner::Lease(lease(store, role, wait, warn)?),
        };
        Ok(Hold { inner })
    }

    /// Gives the store up: a lease is removed, a lock dropped.
    pub fn release(mut self) -> Result<()> {
        match std::mem::replace(&mut self.inner, Inner::None) {
            Inner::Lease(renewed) => renewed.end(),
            Inner::Lock(file) => {
                drop(file);
                Ok(())
            }
            Inner::None => Ok(()),
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Inner::Lease(renewed) = std::mem::replace(&mut self.inner, Inner::None) {
            let _ = renewed.end();
        }
    }
}

/// Takes the lock file `path` shared (a publisher) or exclusive (a prune), waiting at
/// most `wait` when another holds it the other way.
fn lock(path: &std::path::Path, role: Role, wait: Duration, warn: &Warn) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // A link in its place would lead the lock (and the file created) out of the store;
    // anything but a regular file is no lock.
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .at(path)?;
    if !file.metadata().at(path)?.is_file() {
        return Err(Error::Invalid(format!(
            "{}: not a regular file, so not a store's lock",
            path.display()
        )));
    }
    let (now, later) = match role {
        Role::Publish => (
            FlockOperation::NonBlockingLockShared,
            FlockOperation::LockShared,
        ),
        Role::Prune => (
            FlockOperation::NonBlockingLockExclusive,
            FlockOperation::LockExclusive,
        ),
    };
    if rustix::fs::flock(&file, now).is_ok() {
        return Ok(file);
    }
    warn(&waiting(role, &path.display().to_string()));
    let deadline = Instant::now() + wait;
    loop {
        match rustix::fs::flock(&file, now) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(POLL)
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(busy(role, &path.display().to_string(), wait))
            }
            Err(e) => {
                // A filesystem without flock: take it blocking, the one way left.
                rustix::fs::flock(&file, later)
                    .map_err(|_| std::io::Error::from(e))
                    .at(path)?;
                return Ok(file);
            }
        }
    }
}

fn waiting(role: Role, store: &str) -> String {
    match role {
        Role::Publish => format!("{store}: a prune is running; waiting for it to finish"),
        Role::Prune => format!("{store}: releases are being published; waiting for them"),
    }
}

fn busy(role: Role, store: &str, wait: Duration) -> Error {
    let what = match role {
        Role::Publish => "a prune held it",
        Role::Prune => "publishers held it",
    };
    Error::Busy(format!(
        "{store}: {what} for {} s; try again later",
        wait.as_secs()
    ))
}

/// Until when (seconds since the epoch) the lease `listed` holds: what it says, or, when
/// it cannot be read, a lease's time after it was written.
fn expires(listed: &Listed, bytes: &[u8]) -> u64 {
    serde_json::from_slice::<Lease>(bytes).map_or_else(
        |_| {
            listed
                .modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + LEASE_FOR.as_secs()
        },
        |l| l.expires,
    )
}

/// The live leases of `role` in `store`: those whose time has not run out.
fn live(store: &dyn PruneStore, role: Role) -> Result<Vec<String>> {
    let now = now_secs();
    let mut found = Vec::new();
    for listed in store.list_dir(LEASES)? {
        if !listed.name.ends_with(role.suffix()) {
            continue;
        }
        let Some(bytes) = store.read(&listed.name, LEASE_MAX)? else {
            continue;
        };
        if expires(&listed, &bytes) > now {
            found.push(listed.name);
        }
    }
    Ok(found)
}

/// Whether the lease `listed` has expired (as [`live`] counts it): prune removes those.
pub fn is_dead_lease(store: &dyn PruneStore, listed: &Listed) -> Result<bool> {
    let Some(bytes) = store.read(&listed.name, LEASE_MAX)? else {
        return Ok(false);
    };
    Ok(expires(listed, &bytes) <= now_secs())
}

/// Writes a lease of `role` and waits until no live lease of the other role remains (a
/// publisher gives way: it removes its lease while it waits).
fn lease(store: Arc<dyn PruneStore>, role: Role, wait: Duration, warn: &Warn) -> Result<Renewed> {
    let name = format!("{LEASES}/{}{}", random_name()?, role.suffix());
    let deadline = Instant::now() + wait;
    let mut warned = false;
    loop {
        store.write(&name, &lease_bytes())?;
        if live(store.as_ref(), role.other())?.is_empty() {
            return Ok(Renewed::start(store, name));
        }
        if role == Role::Publish {
            store.delete(&name)?;
        }
        if !warned {
            warn(&waiting(role, &store.describe()));
            warned = true;
        }
        while !live(store.as_ref(), role.other())?.is_empty() {
            if Instant::now() >= deadline {
                let _ = store.delete(&name);
                return Err(busy(role, &store.describe(), wait));
            }
            std::thread::sleep(POLL * 4);
        }
    }
}

fn random_name() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Internal(format!("no random bytes for a lease: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Renewed {
    fn start(store: Arc<dyn PruneStore>, name: String) -> Renewed {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let renewer = {
            let (store, name, stop) = (store.clone(), name.clone(), stop.clone());
            std::thread::spawn(move || {
                let (lock, wake) = &*stop;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let (guard, _) = wake
                        .wait_timeout(stopped, RENEW_EVERY)
                        .unwrap_or_else(|e| e.into_inner());
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    // A renewal that fails is tried again at the next turn; the lease
                    // holds for several turns.
                    let _ = store.write(&name, &lease_bytes());
                }
            })
        };
        Renewed {
            store,
            name,
            stop,
            renewer: Some(renewer),
        }
    }

    fn end(mut self) -> Result<()> {
        {
            let (lock, wake) = &*self.stop;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            wake.notify_all();
        }
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        self.store.delete(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_that_is_a_link_or_a_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let outside = dir.path().join("outside");
        let warn: Warn = Arc::new(|_: &str| {});
        for make in ["link", "fifo"] {
            let _ = std::fs::remove_dir_all(&store);
            let local = crate::store::LocalStore::open(&store, true).unwrap();
            let lock = store.join(LOCK_FILE);
            match make {
                "link" => std::os::unix::fs::symlink(&outside, &lock).unwrap(),
                _ => rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &lock,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap(),
            }
            let held = Hold::prune(Arc::new(local), Duration::from_secs(1), &warn);
            assert!(held.is_err(), "{make}");
            assert!(!outside.exists(), "{make}: the lock followed the link");
        }
    }
}
