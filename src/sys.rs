//! The crate's only `unsafe`: four system calls and an allocator setting. blockcast maps
//! no file: a mapped file that shrinks, or a hole on a full filesystem, faults with
//! SIGBUS, which a multithreaded program cannot turn into an error.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// Flushes the whole filesystem holding `file` (syncfs(2)).
pub fn syncfs(file: &File, path: &Path) -> Result<()> {
    // SAFETY: syncfs takes a descriptor that `file` keeps open for the call's duration.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc != 0 {
        return Err(Error::Io {
            path: path.to_path_buf(),
            err: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Deallocates `[offset, offset + len)` of a regular file, which then reads as zeros.
/// Returns false where the filesystem cannot punch holes (the caller writes zeros).
pub fn punch_hole(file: &File, offset: u64, len: u64) -> bool {
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return false;
    };
    // SAFETY: fallocate takes a descriptor that `file` keeps open for the call's duration.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    rc == 0
}

/// Sends `signal` to process `pid`; false when there is no such process.
pub fn send_signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) only reads its two integer arguments.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`, field 22):
/// with the pid, it names one process, never another that reused the number. None when
/// there is no such process, or it has exited and only awaits its parent (a zombie).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// mount(2) of `source` (a file, for filesystems the kernel reads straight from one) on
/// `target`, read-only. mount(8) would quietly put a loop device in between.
pub fn mount_readonly(source: &Path, target: &Path, fs_type: &str) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |b: &[u8]| CString::new(b).map_err(|_| std::io::ErrorKind::InvalidInput);
    let source = c(source.as_os_str().as_bytes())?;
    let target = c(target.as_os_str().as_bytes())?;
    let fs_type = c(fs_type.as_bytes())?;
    // SAFETY: the three strings are NUL-terminated and outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fs_type.as_ptr(),
            libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Lets the allocator keep memory it got back rather than return it to the kernel at
/// once: a mount allocates and frees a chunk-sized buffer for each chunk it fetches, and
/// giving those pages back only to fault them in again costs more than keeping them.
#[cfg(target_env = "gnu")]
pub fn keep_freed_memory() {
    // SAFETY: mallopt only sets two of glibc's allocator parameters; any values are valid.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

/// Elsewhere the allocator keeps its own counsel.
#[cfg(not(target_env = "gnu"))]
pub fn keep_freed_memory() {}

#[cfg(test)]
mod tests {
    use super::process_start;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn a_process_is_known_by_its_start_until_it_exits() {
        let me = process_start(std::process::id());
        assert!(me.is_some());
        assert_eq!(process_start(std::process::id()), me);

        // `cat` runs until its stdin closes: no window in which it may already be gone.
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let started = process_start(pid).expect("a running child");
        assert!(started >= me.unwrap());
        drop(child.stdin.take());
        // Exited but not yet reaped: a zombie, which no longer counts.
        let began = Instant::now();
        while process_start(pid).is_some() {
            assert!(began.elapsed() < Duration::from_secs(10), "never exited");
            std::thread::sleep(Duration::from_millis(20));
        }
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert!(state.contains(") Z "), "{state}");
        child.wait().unwrap();
        assert_eq!(process_start(pid), None);
    }
}
