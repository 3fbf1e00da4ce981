//! The walk: from the root through every directory, each inode's metadata and content
//! recorded, then sorted into regions that tile the image.

use std::collections::{HashMap, HashSet};

use super::format::*;
use super::inode::read_inode;
use super::inode::Inode;
use super::map::{piece_len, Mapping};
use super::superblock::Super;
use super::{bad, Result, Source};
use crate::layout::{tile, Analysis, FileMap, FsKind, Kind, Layout, Piece, Region};

use super::FS;

const MAX_DEPTH: u32 = 4096;

pub(super) struct Walker<'a> {
    pub(super) image: &'a Source<'a>,
    pub(super) sb: Super,
    /// Work and memory left, in bytes; hostile images run out of it.
    pub(super) budget: u64,
    pub(super) parts: Vec<Region>,
    pub(super) shared_xattrs: HashSet<u64>,
    /// The packed inode's content and the logical start of each piece.
    pub(super) packed: Option<(Vec<Piece>, Vec<u64>)>,
}

impl<'a> Walker<'a> {
    pub(super) fn spend(&mut self, cost: u64, at: u64) -> Result<()> {
        self.budget = self
            .budget
            .checked_sub(cost)
            .ok_or_else(|| bad(at, "the image describes far more than it holds"))?;
        Ok(())
    }

    /// Records an inode's metadata and the units holding its content.
    pub(super) fn record(
        &mut self,
        ino: &Inode,
        m: &Mapping,
        file: Option<u64>,
        regular: bool,
    ) -> Result<()> {
        self.parts.push(Region {
            offset: ino.iloc,
            len: m.meta_end - ino.iloc,
            kind: Kind::Metadata,
            file: None,
        });
        for u in &m.units {
            let kind = match (u.compressed, regular) {
                (true, _) => Kind::Compressed,
                (false, true) => Kind::Data,
                (false, false) => Kind::Metadata,
            };
            self.parts.push(Region {
                offset: u.offset,
                len: u.len,
                kind,
                file: if kind == Kind::Metadata { None } else { file },
            });
        }
        if ino.xattr_isize > 0 {
            self.record_shared_xattrs(ino)?;
        }
        Ok(())
    }
}

/// Sorts the recorded stretches into regions: identical units named by several files
/// become shared, a file's adjacent data extents merge, metadata merges and widens to
/// whole blocks where nothing else lies, and `tile` fills the gaps.
fn finish(image: &Source, bs: u64, parts: Vec<Region>) -> Result<Vec<Region>> {
    let size = image.size();
    let (mut meta, mut units): (Vec<Region>, Vec<Region>) = parts
        .into_iter()
        .filter(|r| r.len > 0)
        .partition(|r| r.kind == Kind::Metadata);
    units.sort_by_key(|r| (r.offset, r.len));
    let mut merged: Vec<Region> = Vec::with_capacity(units.len());
    for r in units {
        if let Some(last) = merged.last_mut() {
            let same = last.offset == r.offset && last.len == r.len && last.kind == r.kind;
            let data_overlap =
                last.kind == Kind::Data && r.kind == Kind::Data && r.offset < last.end();
            if same || data_overlap {
                if last.file != r.file {
                    last.file = None;
                }
                last.len = last.len.max(r.end() - last.offset);
                continue;
            }
            if last.kind == Kind::Data
                && r.kind == Kind::Data
                && r.offset == last.end()
                && last.file.is_some()
                && last.file == r.file
            {
                last.len += r.len;
                continue;
            }
        }
        merged.push(r);
    }
    let units = merged;

    let union = |mut v: Vec<Region>| -> Vec<Region> {
        v.sort_by_key(|r| r.offset);
        let mut out: Vec<Region> = Vec::with_capacity(v.len());
        for r in v {
            match out.last_mut() {
                Some(last) if r.offset <= last.end() => {
                    last.len = last.len.max(r.end() - last.offset)
                }
                _ => out.push(r),
            }
        }
        out
    };
    meta = union(meta);
    for m in &mut meta {
        let idx = units.partition_point(|u| u.offset < m.offset);
        let prev_end = if idx > 0 { units[idx - 1].end() } else { 0 };
        let next_start = units.get(idx).map_or(size, |u| u.offset);
        let lo = (m.offset - m.offset % bs).max(prev_end.min(m.offset));
        let hi = m
            .end()
            .next_multiple_of(bs)
            .min(size)
            .min(next_start.max(m.end()))
            .max(m.end());
        *m = Region {
            offset: lo,
            len: hi - lo,
            kind: Kind::Metadata,
            file: None,
        };
    }
    meta = union(meta);
    meta.extend(units);
    tile(FS, image, meta)
}

/// Describes an erofs image: its metadata, every regular file's data extents and
/// pclusters, and its free space.
pub fn analyse<'a>(image: impl Into<Source<'a>>) -> Result<Analysis> {
    let image = &image.into();
    let sb = Super::parse(image)?;
    let bs = sb.bs;
    let mut w = Walker {
        image,
        budget: image.size().saturating_mul(32).saturating_add(16 << 20),
        parts: sb
            .meta
            .iter()
            .map(|&(offset, len)| Region {
                offset,
                len,
                kind: Kind::Metadata,
                file: None,
            })
            .collect(),
        sb,
        shared_xattrs: HashSet::new(),
        packed: None,
    };

    let mut seen = HashSet::new();
    if let Some(nid) = w.sb.packed_nid {
        let ino = read_inode(image, &w.sb, nid)?;
        if ino.kind() != S_IFREG {
            return Err(bad(ino.iloc, "the packed inode is not a regular file"));
        }
        let m = w.map(&ino)?;
        w.record(&ino, &m, None, true)?;
        let mut starts = Vec::with_capacity(m.pieces.len());
        let mut pos = 0;
        for p in &m.pieces {
            starts.push(pos);
            pos += piece_len(p);
        }
        w.packed = Some((m.pieces, starts));
        seen.insert(nid);
    }

    let root = read_inode(image, &w.sb, w.sb.root_nid)?;
    if root.kind() != S_IFDIR {
        return Err(bad(root.iloc, "the root inode is not a directory"));
    }
    seen.insert(root.nid);
    let mut files: Vec<FileMap> = Vec::new();
    let mut file_of: HashMap<u64, usize> = HashMap::new();
    let mut stack = vec![(root, String::new(), 0u32)];
    while let Some((dir, path, depth)) = stack.pop() {
        let m = w.map(&dir)?;
        w.record(&dir, &m, None, false)?;
        let data = w.content(&dir, &m.pieces)?;
        for (name, nid) in w.read_dir(&dir, &data)? {
            let child_path = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            w.spend(child_path.len() as u64 + 64, dir.iloc)?;
            if !seen.insert(nid) {
                // Hard links share the inode, its regions already recorded.
                if let Some(&i) = file_of.get(&nid) {
                    let (inode, size, pieces) =
                        (files[i].inode, files[i].size, files[i].pieces.clone());
                    w.spend(48 * pieces.len() as u64, dir.iloc)?;
                    files.push(FileMap {
                        path: child_path,
                        inode,
                        size,
                        pieces,
                    });
                }
                continue;
            }
            let ino = read_inode(image, &w.sb, nid)?;
            match ino.kind() {
                S_IFDIR => {
                    if depth >= MAX_DEPTH {
                        return Err(bad(ino.iloc, "directories nest too deep"));
                    }
                    stack.push((ino, child_path, depth + 1));
                }
                S_IFREG => {
                    let m = w.map(&ino)?;
                    w.record(&ino, &m, Some(nid), true)?;
                    file_of.insert(nid, files.len());
                    files.push(FileMap {
                        path: child_path,
                        inode: nid,
                        size: ino.size,
                        pieces: m.pieces,
                    });
                }
                _ => {
                    let m = w.map(&ino)?;
                    w.record(&ino, &m, None, false)?;
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let regions = finish(image, bs, std::mem::take(&mut w.parts))?;
    Ok(Analysis {
        layout: Layout {
            fs: FsKind::Erofs,
            block_size: bs as u32,
            regions,
        },
        files,
    })
}
