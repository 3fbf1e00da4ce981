//! How an image was cut, and what its filesystem analysis found: what an index records of
//! the layout.

use serde::Serialize;

use super::{Kind, Layout};

/// How an image is to be cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cutting {
    /// The 4 KiB-aligned content-defined chunker (layout 0).
    #[default]
    Aligned,
    /// Along the filesystem's regions where it can be read (layouts 1 and 2); with
    /// `metadata_apart`, metadata never shares a chunk with file data (layout 2).
    Filesystem { metadata_apart: bool },
}

impl Cutting {
    pub fn is_filesystem_aware(&self) -> bool {
        matches!(self, Cutting::Filesystem { .. })
    }
}

/// Which chunker cut the image, and what the filesystem analysis found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(into = "Shown")]
pub struct LayoutSummary {
    /// How the image was cut; a seed must be cut the same way to match it.
    pub cutting: Cutting,
    pub metadata: RegionTally,
    pub data: RegionTally,
    pub compressed: RegionTally,
    pub free: RegionTally,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RegionTally {
    pub regions: u32,
    pub bytes: u64,
}

impl LayoutSummary {
    /// The regions of `layout`, cut as `cutting` says.
    pub fn of(layout: &Layout, cutting: Cutting) -> LayoutSummary {
        let mut s = LayoutSummary {
            cutting,
            ..LayoutSummary::default()
        };
        for r in &layout.regions {
            let t = match r.kind {
                Kind::Metadata => &mut s.metadata,
                Kind::Data => &mut s.data,
                Kind::Compressed => &mut s.compressed,
                Kind::Free => &mut s.free,
            };
            t.regions = t.regions.saturating_add(1);
            t.bytes += r.len;
        }
        s
    }
}

/// The summary as `--json` shows it.
#[derive(Serialize)]
struct Shown {
    /// True when the cuts follow the filesystem's regions.
    filesystem_aware: bool,
    /// True when metadata is cut apart from file data (layout 2).
    metadata_apart: bool,
    metadata: RegionTally,
    data: RegionTally,
    compressed: RegionTally,
    free: RegionTally,
}

impl From<LayoutSummary> for Shown {
    fn from(s: LayoutSummary) -> Shown {
        Shown {
            filesystem_aware: s.cutting.is_filesystem_aware(),
            metadata_apart: s.cutting
                == Cutting::Filesystem {
                    metadata_apart: true,
                },
            metadata: s.metadata,
            data: s.data,
            compressed: s.compressed,
            free: s.free,
        }
    }
}
