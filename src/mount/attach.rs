//! Attaching an image file read-only at a mountpoint, and taking it away again: a loop
//! device, or for erofs a file-backed mount where the kernel has one: mount(2) for that
//! one (mount(8) would quietly put a loop device in between), the system's `losetup`,
//! `mount` and `umount` for the rest.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::FsKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// erofs straight from the file where the kernel can, else a loop device.
    Auto,
    Loop,
    /// erofs only: the kernel reads the file itself.
    File,
}

/// How an image ended up attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "how")]
pub enum Attached {
    Loop { device: PathBuf },
    File,
}

pub fn fs_type(kind: FsKind) -> Result<&'static str> {
    match kind {
        FsKind::Erofs => Ok("erofs"),
        FsKind::Squashfs => Ok("squashfs"),
        FsKind::Ext4 => Ok("ext4"),
        FsKind::Unknown => Err(Error::Unsupported(
            "the index records no filesystem type this command can mount; use --no-attach and attach the file yourself".into(),
        )),
    }
}

/// Mounts `image` read-only on `mountpoint`.
pub fn attach(image: &Path, kind: FsKind, mountpoint: &Path, mode: AttachMode) -> Result<Attached> {
    let fs = fs_type(kind)?;
    let file_backed = match (mode, kind) {
        (AttachMode::File, FsKind::Erofs) => true,
        (AttachMode::File, _) => {
            return Err(Error::Unsupported(format!(
                "only erofs mounts straight from a file; this image is {fs}"
            )))
        }
        (AttachMode::Auto, FsKind::Erofs) => true,
        _ => false,
    };
    if file_backed {
        match crate::sys::mount_readonly(image, mountpoint, fs) {
            Ok(()) => return Ok(Attached::File),
            Err(e) if mode == AttachMode::File => {
                return Err(Error::Unsupported(format!(
                    "mounting {} on {} straight from the file: {e} (the kernel may lack file-backed erofs)",
                    image.display(),
                    mountpoint.display()
                )))
            }
            Err(_) => {}
        }
    }
    let device = output(
        Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(image),
    )?;
    let device = PathBuf::from(device.trim());
    let mounted = run(Command::new("mount")
        .args(["-t", fs, "-o", "ro"])
        .arg(&device)
        .arg(mountpoint));
    if let Err(e) = mounted {
        let _ = run(Command::new("losetup").arg("-d").arg(&device));
        return Err(e);
    }
    Ok(Attached::Loop { device })
}

/// Unmounts `mountpoint` if what is mounted there is this mount's (the loop device or
/// `image`), then frees the loop device if there was one and it still backs `image`:
/// after a killed mount was cleaned up by hand, the mountpoint and the device may serve
/// someone else by now. `lazy` detaches a filesystem still in use (its backing file is
/// gone for good).
pub fn detach(mountpoint: &Path, attached: &Attached, image: &Path, lazy: bool) -> Result<()> {
    let ours = match attached {
        Attached::Loop { device } => device.as_path(),
        Attached::File => image,
    };
    if mount_source(mountpoint)?
        .is_some_and(|source| source == escape_mount_path(&ours.to_string_lossy()))
    {
        let mut cmd = Command::new("umount");
        if lazy {
            cmd.arg("--lazy");
        }
        gone_or(mountpoint, run(cmd.arg(mountpoint)))?;
    }
    if let Attached::Loop { device } = attached {
        if loop_backing(device).is_some_and(|file| Path::new(&file) == image) {
            run(Command::new("losetup").arg("-d").arg(device))?;
        }
    }
    Ok(())
}

/// Unmounts a FUSE mount, lazily when its server is gone.
pub fn unmount_fuse(dir: &Path) -> Result<()> {
    if !is_mounted(dir)? {
        return Ok(());
    }
    if run(Command::new("umount").arg(dir)).is_err() {
        gone_or(dir, run(Command::new("umount").arg("--lazy").arg(dir)))?;
    }
    Ok(())
}

/// A failed unmount is no failure when `path` is no longer mounted: another process
/// (the mount's own, stopping) took it down first.
fn gone_or(path: &Path, unmounted: Result<()>) -> Result<()> {
    match unmounted {
        Err(e) if is_mounted(path)? => Err(e),
        _ => Ok(()),
    }
}

/// Whether something is mounted exactly at `path`, from /proc/self/mountinfo.
pub fn is_mounted(path: &Path) -> Result<bool> {
    Ok(mount_source(path)?.is_some())
}

/// The source (escaped as in mountinfo) of the filesystem mounted last, so on top, exactly
/// at `path`, from /proc/self/mountinfo.
fn mount_source(path: &Path) -> Result<Option<String>> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::Io {
        path: "/proc/self/mountinfo".into(),
        err: e,
    })?;
    let wanted = escape_mount_path(&path.to_string_lossy());
    Ok(info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
        .map(|l| {
            // After the optional fields: "- fstype source options".
            let mut rest = l.split(' ').skip_while(|f| *f != "-").skip(2);
            rest.next().unwrap_or_default().to_string()
        }))
}

/// The file behind a loop device, if it is attached.
fn loop_backing(device: &Path) -> Option<String> {
    let name = device.file_name()?.to_str()?;
    std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn escape_mount_path(p: &str) -> String {
    p.replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012")
}

fn run(cmd: &mut Command) -> Result<()> {
    output(cmd).map(drop)
}

fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|err| Error::Io {
        path: shown.clone().into(),
        err,
    })?;
    if !out.status.success() {
        return Err(Error::Io {
            path: shown.into(),
            err: std::io::Error::other(format!(
                "failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
