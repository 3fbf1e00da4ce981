//! What filesystem an image holds, recognised by its superblock magic.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Unknown,
    Erofs,
    Squashfs,
    Ext4,
}

impl FsKind {
    pub fn code(self) -> u8 {
        match self {
            FsKind::Unknown => 0,
            FsKind::Erofs => 1,
            FsKind::Squashfs => 2,
            FsKind::Ext4 => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<FsKind> {
        Some(match code {
            0 => FsKind::Unknown,
            1 => FsKind::Erofs,
            2 => FsKind::Squashfs,
            3 => FsKind::Ext4,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FsKind::Unknown => "unknown",
            FsKind::Erofs => "erofs",
            FsKind::Squashfs => "squashfs",
            FsKind::Ext4 => "ext4",
        }
    }

    /// Recognises the filesystem from the image's first 4 KiB (fewer if the image is smaller).
    pub fn detect(head: &[u8]) -> FsKind {
        let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
        if at(0, b"hsqs") {
            FsKind::Squashfs
        } else if at(1024, &0xE0F5_E1E2u32.to_le_bytes()) {
            FsKind::Erofs
        } else if at(1024 + 56, &0xEF53u16.to_le_bytes()) {
            FsKind::Ext4
        } else {
            FsKind::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic() {
        let mut head = vec![0u8; 4096];
        assert_eq!(FsKind::detect(&head), FsKind::Unknown);
        head[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        assert_eq!(FsKind::detect(&head), FsKind::Ext4);
        head[1024..1028].copy_from_slice(&[0xE2, 0xE1, 0xF5, 0xE0]);
        assert_eq!(FsKind::detect(&head), FsKind::Erofs);
        head[..4].copy_from_slice(b"hsqs");
        assert_eq!(FsKind::detect(&head), FsKind::Squashfs);
        assert_eq!(FsKind::detect(&head[..10]), FsKind::Squashfs);
        assert_eq!(FsKind::detect(&[]), FsKind::Unknown);
    }
}
