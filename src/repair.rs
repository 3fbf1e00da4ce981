//! `verify --fec` and `repair`: find an image's damaged blocks with its index's dm-verity
//! tree, and restore them with the image's FEC file (see [`crate::verity::fec`]).

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::index::Index;
use crate::mount::StoredTree;
use crate::progress::Progress;
use crate::store::Stores;
use crate::trust::TrustedIndex;
use crate::verity::fec::{self, Outcome, Roots, Stream, Target, Tree};
use crate::verity::{self, FileArea, Geometry, HashArea, BLOCK};

/// Where the tree of an image is.
pub enum TreeSource<'a> {
    /// A hash device (superblock, then the tree), as `extract --verity` writes it.
    Device(&'a Path),
    /// The hash device appended to the image after its padded data, as `extract
    /// --verity-append` writes it.
    Appended,
    /// The tree's pieces in the stores (read only: a repair restores data blocks alone).
    Stores(&'a Stores),
}

/// The FEC file of an image, made with `roots` parity bytes per codeword.
pub struct FecFile<'a> {
    pub path: &'a Path,
    pub roots: Roots,
}

/// Checks every block of `image` and of its tree against the index's root, and works out
/// which damaged blocks `fec` restores. Writes nothing.
pub fn check(
    index: &TrustedIndex,
    image: &Path,
    tree: TreeSource,
    fec: &FecFile,
    progress: &dyn Progress,
) -> Result<Outcome> {
    run(index, image, tree, fec, false, progress)
}

/// Restores the damaged blocks of `image` and of its tree in place with `fec`, writing
/// only blocks it restored and checked against the tree, then checks everything again.
/// The outcome names what it could not restore.
pub fn repair(
    index: &TrustedIndex,
    image: &Path,
    tree: TreeSource,
    fec: &FecFile,
    progress: &dyn Progress,
) -> Result<Outcome> {
    run(index, image, tree, fec, true, progress)
}

fn run(
    index: &TrustedIndex,
    image_path: &Path,
    tree: TreeSource,
    fec: &FecFile,
    write: bool,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let v = &index.header().verity;
    let geometry = Geometry::new(v.data_blocks);
    let image = Image::open(image_path)?;
    // The tree's size follows the image's, so it is bounded by what the image holds.
    if image.size() + BLOCK <= v.padded_size() {
        return Err(Error::Invalid(format!(
            "{}: {} bytes, where the index's image has {}",
            image_path.display(),
            image.size(),
            index.header().image_size
        )));
    }
    let fec_file = Image::open(fec.path)?;
    let device;
    let stored;
    let file_area;
    let (area, hash_file): (&(dyn HashArea + Sync), Option<(&Path, u64)>) = match tree {
        TreeSource::Device(path) => {
            device = open_hash_device(index, path)?;
            file_area = FileArea {
                image: &device,
                base: BLOCK,
            };
            (&file_area, Some((path, BLOCK)))
        }
        TreeSource::Appended => {
            let base = appended_area(index, &image)?;
            file_area = FileArea {
                image: &image,
                base,
            };
            (&file_area, Some((image_path, base)))
        }
        TreeSource::Stores(stores) => {
            stored = StoredTree { index, stores };
            (&stored, None)
        }
    };
    let stream = Stream::new(&image, area, &geometry);
    let tree = Tree {
        geometry: &geometry,
        salt: &v.salt,
        root: v.root,
    };
    if !write {
        return fec::check(&stream, &tree, &fec_file, fec.roots, progress);
    }
    let data = writable(image_path)?;
    let device_file = match hash_file {
        Some((path, _)) if path != image_path => Some(writable(path)?),
        Some(_) | None => None,
    };
    let hash = hash_file.map(|(path, base)| (device_file.as_ref().unwrap_or(&data), path, base));
    let target = Target {
        data: (&data, image_path),
        hash,
    };
    fec::repair(&stream, &tree, &fec_file, fec.roots, &target, progress)
}

fn writable(path: &Path) -> Result<File> {
    OpenOptions::new().write(true).open(path).at(path)
}

/// The hash device at `path`, after checking that it holds the whole tree and that its
/// superblock is the index's.
pub fn open_hash_device(index: &Index, path: &Path) -> Result<Image> {
    let v = &index.header().verity;
    let device = Image::open(path)?;
    let need = BLOCK + v.tree_size;
    if device.size() < need {
        return Err(Error::Invalid(format!(
            "hash device {} is shorter than the {need} bytes of the tree",
            path.display()
        )));
    }
    check_superblock(index, &device.read_at(0, BLOCK as usize)?, path)?;
    Ok(device)
}

/// Where the hash area appended to `image` starts, after checking the superblock before
/// it against the index.
fn appended_area(index: &Index, image: &Image) -> Result<u64> {
    let v = &index.header().verity;
    let at = v.padded_size();
    if image.size() < at + BLOCK + v.tree_size {
        return Err(Error::Invalid(format!(
            "{}: no hash tree after the image (extract --verity-append puts one there); name the hash device or the stores instead",
            image.path().display()
        )));
    }
    check_superblock(index, &image.read_at(at, BLOCK as usize)?, image.path())?;
    Ok(at + BLOCK)
}

fn check_superblock(index: &Index, block: &[u8], path: &Path) -> Result<()> {
    let v = &index.header().verity;
    let Some((uuid, blocks, salt)) = verity::parse_superblock(block) else {
        return Err(Error::Invalid(format!(
            "{}: not a dm-verity hash device (bad superblock)",
            path.display()
        )));
    };
    if blocks != v.data_blocks || salt != v.salt || uuid != v.uuid {
        return Err(Error::Integrity(format!(
            "{}: its superblock (data blocks, salt or uuid) differs from the index",
            path.display()
        )));
    }
    Ok(())
}
