//! docs/FORMAT.md is the contract: its checked tables must match the code.

use blockcast::index::format::{self, Field};

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FORMAT.md")).unwrap()
}

/// The rows of the first table after `heading`, as cells.
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    doc[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The table after `heading` lists `fields`, in order.
fn check_rows(heading: &str, fields: &[&Field]) {
    let rows = table(&doc(), heading);
    assert_eq!(rows.len(), fields.len(), "{heading}: row count");
    for (row, f) in rows.iter().zip(fields) {
        assert_eq!(row[0], f.offset.to_string(), "{heading} {}", f.name);
        assert_eq!(row[1], f.size.to_string(), "{heading} {}", f.name);
        assert_eq!(row[2], f.name, "{heading}");
    }
}

fn check_fields(heading: &str, fields: &[&Field], total: usize) {
    check_rows(heading, fields);
    let last = fields[fields.len() - 1];
    assert_eq!(
        last.offset + last.size,
        total,
        "{heading} covers the structure"
    );
    for pair in fields.windows(2) {
        assert_eq!(
            pair[0].offset + pair[0].size,
            pair[1].offset,
            "{heading} gap"
        );
    }
}

#[test]
fn header_table_matches() {
    check_fields(
        "### Header (checked)",
        &format::HEADER_FIELDS,
        format::HEADER_SIZE,
    );
}

#[test]
fn record_table_matches() {
    check_fields(
        "### Chunk record (checked)",
        &format::RECORD_FIELDS,
        format::RECORD_SIZE,
    );
}

#[test]
fn delta_record_table_matches() {
    check_fields(
        "### Delta record (checked)",
        &format::DELTA_FIELDS,
        format::RECORD_SIZE,
    );
}

#[test]
fn base_entry_table_matches() {
    check_fields(
        "### Base-run entry (checked)",
        &format::BASE_ENTRY_FIELDS,
        format::BASE_ENTRY_SIZE,
    );
}

#[test]
fn constants_match() {
    let rows = table(&doc(), "### Constants (checked)");
    let code: Vec<(&str, String)> = vec![
        ("MAGIC", String::from_utf8(format::MAGIC.to_vec()).unwrap()),
        ("VERSION", format::VERSION.to_string()),
        ("HEADER_SIZE", format::HEADER_SIZE.to_string()),
        ("RECORD_SIZE", format::RECORD_SIZE.to_string()),
        ("BASE_ENTRY_SIZE", format::BASE_ENTRY_SIZE.to_string()),
        ("MAX_BASE_RUN", format::MAX_BASE_RUN.to_string()),
        ("FLAG_ZERO", format::FLAG_ZERO.to_string()),
        ("FLAG_GATHERED", format::FLAG_GATHERED.to_string()),
        ("HASH_SHA256", format::HASH_SHA256.to_string()),
        ("COMPRESSION_ZSTD", format::COMPRESSION_ZSTD.to_string()),
        ("ALIGN", blockcast::chunker::ALIGN.to_string()),
        ("MAX_CHUNK", blockcast::index::MAX_CHUNK.to_string()),
        ("MAX_INDEX_SIZE", format::MAX_INDEX_SIZE.to_string()),
        ("TREE_PIECE", format::TREE_PIECE.to_string()),
        ("LAYOUT_ALIGNED_CDC", format::LAYOUT_ALIGNED_CDC.to_string()),
        (
            "LAYOUT_FILESYSTEM_V1",
            format::LAYOUT_FILESYSTEM_V1.to_string(),
        ),
        ("LAYOUT_FILESYSTEM", format::LAYOUT_FILESYSTEM.to_string()),
    ];
    assert_eq!(rows.len(), code.len());
    for (row, (name, value)) in rows.iter().zip(code) {
        assert_eq!(row[0], name);
        assert_eq!(row[1], value, "{name}");
    }
}

/// A version-3 index written by an earlier build still reads, with the same chunks.
#[test]
fn golden_v3_index_still_reads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v3-tiny.bcidx");
    let index = blockcast::index::Index::open(std::path::Path::new(path)).unwrap();
    let img = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny.img"
    ))
    .unwrap();
    assert_eq!(index.header().image_size, img.len() as u64);
    for r in index.records() {
        let bytes = &img[r.offset as usize..r.end() as usize];
        if r.is_zero() {
            assert!(bytes.iter().all(|&b| b == 0));
        } else {
            assert_eq!(blockcast::chunk::ChunkId::of(bytes), r.id);
        }
    }
}

/// A version-5 index with deltas (`tests/fixtures/v5-erofs-v2.bcidx`: `blockcast make
/// testimages/erofs-v2.img --delta-from v4-erofs-v1.bcidx` by the build before base runs)
/// still reads: each delta is a run of its one base chunk, a chunk of the earlier release.
#[test]
fn golden_v5_deltas_still_read() {
    let fixture = |name: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        blockcast::index::Index::open(&path).unwrap()
    };
    let (v1, v2) = (fixture("v4-erofs-v1.bcidx"), fixture("v5-erofs-v2.bcidx"));
    assert_eq!(v2.version(), 5);
    let earlier: std::collections::HashMap<_, _> = v1.records().map(|r| (r.id, r.size)).collect();
    let deltas: Vec<_> = v2.deltas().collect();
    assert_eq!(deltas.len(), 11);
    for d in deltas {
        assert_eq!(d.run.len(), 1);
        assert_eq!(d.run[0].id, d.base);
        assert_eq!(d.run[0].size, d.base_size);
        assert_eq!(earlier.get(&d.base), Some(&d.base_size));
    }
}

/// An index of layout 1 (`tests/fixtures/layout1-erofs-v1.bcidx`: `blockcast make
/// testimages/erofs-v1.img` by the build before layout 2) still finds every chunk in a
/// seed of the same image, because the seed is cut by the layout-1 rule; cut by the
/// layout-2 rule the seed would miss some.
#[test]
fn layout1_seeds_are_cut_as_layout1_was() {
    use blockcast::layout::Cutting;
    use blockcast::seed::Seed;
    let dir = env!("CARGO_MANIFEST_DIR");
    let index = blockcast::index::Index::open(
        format!("{dir}/tests/fixtures/layout1-erofs-v1.bcidx").as_ref(),
    )
    .unwrap();
    let h = index.header();
    assert_eq!(
        h.layout.cutting,
        Cutting::Filesystem {
            metadata_apart: false
        }
    );
    let ids: std::collections::HashSet<_> = index
        .records()
        .filter(|r| !r.is_zero())
        .map(|r| r.id)
        .collect();
    let image = std::path::PathBuf::from(format!("{dir}/testimages/erofs-v1.img"));
    let found = |cutting| {
        let seed = Seed::scan(
            &image,
            h.params,
            cutting,
            &ids,
            &blockcast::progress::Silent,
        )
        .unwrap();
        ids.iter().filter(|id| seed.locate(id).is_some()).count()
    };
    assert_eq!(found(h.layout.cutting), ids.len());
    assert!(
        found(Cutting::Filesystem {
            metadata_apart: true
        }) < ids.len()
    );
}

#[test]
fn verity_superblock_table_matches() {
    use blockcast::verity::sb;
    check_fields(
        "### Hash device superblock (checked)",
        &sb::FIELDS,
        sb::SIZE,
    );
}

/// The superblock written for a tree parses back to what was written.
#[test]
fn verity_superblock_round_trips() {
    use blockcast::verity::{self, Geometry, VerityParams};
    let params = VerityParams {
        salt: vec![7; 32],
        uuid: [9; 16],
    };
    let written = verity::superblock(&Geometry::new(1234), &params);
    assert_eq!(
        verity::parse_superblock(&written),
        Some(([9; 16], 1234, vec![7; 32]))
    );
}

#[test]
fn fec_constants_match() {
    use blockcast::verity::fec;
    let rows = table(&doc(), "#### FEC constants (checked)");
    let code = [
        ("FEC_FIELD_POLY", format!("{:#x}", fec::FIELD_POLY)),
        ("FEC_CODEWORD", fec::CODEWORD.to_string()),
        ("FEC_MIN_ROOTS", fec::MIN_ROOTS.to_string()),
        ("FEC_MAX_ROOTS", fec::MAX_ROOTS.to_string()),
        ("FEC_DEFAULT_ROOTS", fec::DEFAULT_ROOTS.to_string()),
    ];
    assert_eq!(rows.len(), code.len());
    for (row, (name, value)) in rows.iter().zip(code) {
        assert_eq!(row[0], name);
        assert_eq!(row[1], value, "{name}");
    }
}

#[test]
fn squashfs_tables_match() {
    use blockcast::layout::squashfs::format as f;
    check_structure("squashfs_super_block", &f::SUPER_FIELDS, f::SUPER_SIZE);
    check_structure(
        "squashfs_base_inode",
        &f::BASE_INODE_FIELDS,
        f::BASE_INODE_SIZE,
    );
    check_structure(
        "squashfs_dir_inode",
        &f::DIR_INODE_FIELDS,
        f::DIR_INODE_SIZE,
    );
    check_structure(
        "squashfs_ldir_inode",
        &f::LDIR_INODE_FIELDS,
        f::LDIR_INODE_SIZE,
    );
    check_structure(
        "squashfs_reg_inode",
        &f::REG_INODE_FIELDS,
        f::REG_INODE_SIZE,
    );
    check_structure(
        "squashfs_lreg_inode",
        &f::LREG_INODE_FIELDS,
        f::LREG_INODE_SIZE,
    );
    check_structure(
        "squashfs_dir_header",
        &f::DIR_HEADER_FIELDS,
        f::DIR_HEADER_SIZE,
    );
    check_structure(
        "squashfs_dir_entry",
        &f::DIR_ENTRY_FIELDS,
        f::DIR_ENTRY_SIZE,
    );
    check_structure(
        "squashfs_fragment_entry",
        &f::FRAGMENT_ENTRY_FIELDS,
        f::FRAGMENT_ENTRY_SIZE,
    );
    check_structure(
        "squashfs_xattr_id_table",
        &f::XATTR_ID_TABLE_FIELDS,
        f::XATTR_ID_TABLE_SIZE,
    );
}

#[test]
fn ext4_tables_match() {
    use blockcast::layout::ext4::format as f;
    check_structure("ext4_super_block", &f::SUPER_FIELDS, f::SUPER_SIZE);
    check_structure("ext4_group_desc", &f::GROUP_DESC_FIELDS, f::GROUP_DESC_SIZE);
    check_structure("ext4_inode", &f::INODE_FIELDS, f::INODE_SIZE);
    check_structure(
        "ext4_extent_header",
        &f::EXTENT_HEADER_FIELDS,
        f::EXTENT_HEADER_SIZE,
    );
    check_structure("ext4_extent", &f::EXTENT_FIELDS, f::EXTENT_SIZE);
    check_structure("ext4_extent_idx", &f::EXTENT_IDX_FIELDS, f::EXTENT_IDX_SIZE);
    check_structure("ext4_dir_entry_2", &f::DIR_ENTRY_FIELDS, f::DIR_ENTRY_SIZE);
    check_structure(
        "ext4_xattr_ibody_header",
        &f::XATTR_IBODY_HEADER_FIELDS,
        f::XATTR_IBODY_HEADER_SIZE,
    );
    check_structure(
        "ext4_xattr_entry",
        &f::XATTR_ENTRY_FIELDS,
        f::XATTR_ENTRY_SIZE,
    );
}

/// A filesystem structure's table: its heading names the size, its rows are the fields
/// (union members share an offset; the code asserts at compile time that the fields
/// cover the structure).
fn check_structure(name: &str, fields: &[&Field], size: usize) {
    let heading = format!("#### {name}, {size} bytes (checked)");
    check_rows(&heading, fields);
    let end = fields.iter().map(|f| f.offset + f.size).max();
    assert_eq!(
        end,
        Some(size),
        "{heading}: the fields end at the structure's end"
    );
}

#[test]
fn erofs_tables_match() {
    use blockcast::layout::erofs::format as f;
    check_structure("erofs_super_block", &f::SUPER_FIELDS, f::SUPER_SIZE);
    check_structure(
        "erofs_inode_compact",
        &f::INODE_COMPACT_FIELDS,
        f::INODE_COMPACT_SIZE,
    );
    check_structure(
        "erofs_inode_extended",
        &f::INODE_EXTENDED_FIELDS,
        f::INODE_EXTENDED_SIZE,
    );
    check_structure(
        "erofs_xattr_ibody_header",
        &f::XATTR_IBODY_HEADER_FIELDS,
        f::XATTR_IBODY_HEADER_SIZE,
    );
    check_structure(
        "erofs_xattr_entry",
        &f::XATTR_ENTRY_FIELDS,
        f::XATTR_ENTRY_SIZE,
    );
    check_structure(
        "erofs_inode_chunk_index",
        &f::CHUNK_INDEX_FIELDS,
        f::CHUNK_INDEX_SIZE,
    );
    check_structure(
        "z_erofs_map_header",
        &f::MAP_HEADER_FIELDS,
        f::MAP_HEADER_SIZE,
    );
    check_structure(
        "z_erofs_lcluster_index",
        &f::LCLUSTER_INDEX_FIELDS,
        f::LCLUSTER_INDEX_SIZE,
    );
    check_structure("z_erofs_extent", &f::EXTENT_FIELDS, f::EXTENT_SIZE);
    check_structure("erofs_dirent", &f::DIRENT_FIELDS, f::DIRENT_SIZE);
}

#[test]
fn pack_tables_match() {
    use blockcast::pack::format as p;
    check_fields(
        "### Pack header (checked)",
        &p::PACK_HEADER_FIELDS,
        p::PACK_HEADER_SIZE,
    );
    check_fields(
        "### Table of contents entry (checked)",
        &p::TOC_FIELDS,
        p::TOC_ENTRY_SIZE,
    );
    check_fields(
        "### Pack map header (checked)",
        &p::MAP_HEADER_FIELDS,
        p::MAP_HEADER_SIZE,
    );
    check_fields(
        "### Pack map entry (checked)",
        &p::MAP_ENTRY_FIELDS,
        p::MAP_ENTRY_SIZE,
    );
}

#[test]
fn pack_constants_match() {
    use blockcast::pack::format as p;
    let magic = |m: [u8; 8]| {
        String::from_utf8(m.to_vec())
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    let rows = table(&doc(), "### Pack constants (checked)");
    let code: Vec<(&str, String)> = vec![
        ("PACK_MAGIC", magic(p::PACK_MAGIC)),
        ("PACK_VERSION", p::PACK_VERSION.to_string()),
        ("PACK_HEADER_SIZE", p::PACK_HEADER_SIZE.to_string()),
        ("TOC_ENTRY_SIZE", p::TOC_ENTRY_SIZE.to_string()),
        ("MAP_MAGIC", magic(p::MAP_MAGIC)),
        ("MAP_VERSION", p::MAP_VERSION.to_string()),
        ("MAP_HEADER_SIZE", p::MAP_HEADER_SIZE.to_string()),
        ("MAP_ENTRY_SIZE", p::MAP_ENTRY_SIZE.to_string()),
        ("KIND_CHUNK", p::KIND_CHUNK.to_string()),
        ("KIND_DELTA", p::KIND_DELTA.to_string()),
        ("MAX_ENTRIES", p::MAX_ENTRIES.to_string()),
        ("MAX_PACKS", p::MAX_PACKS.to_string()),
        ("DEFAULT_PACK_SIZE", p::DEFAULT_PACK_SIZE.to_string()),
        ("MAP_ZSTD_LEVEL", p::MAP_ZSTD_LEVEL.to_string()),
    ];
    assert_eq!(rows.len(), code.len());
    for (row, (name, value)) in rows.iter().zip(code) {
        assert_eq!(row[0], name);
        assert_eq!(row[1], value, "{name}");
    }
}

#[test]
fn release_manifest_constants_match() {
    use blockcast::oci as o;
    let rows = table(&doc(), "#### Release manifest constants (checked)");
    let code: Vec<(&str, String)> = vec![
        ("ARTIFACT_TYPE", o::ARTIFACT_TYPE.into()),
        ("INDEX_TYPE", o::INDEX_TYPE.into()),
        ("PACK_MAP_TYPE", o::PACK_MAP_TYPE.into()),
        ("PACK_TYPE", o::PACK_TYPE.into()),
        ("SIGNATURE_TYPE_PREFIX", o::SIGNATURE_TYPE_PREFIX.into()),
        ("MINISIGN", o::MINISIGN.into()),
        ("CMS", o::CMS.into()),
        ("ROOTHASH_P7S", o::ROOTHASH_P7S.into()),
        ("VERITY_SIG", o::VERITY_SIG.into()),
        ("INDEX_DIGEST_ANNOTATION", o::INDEX_DIGEST_ANNOTATION.into()),
        ("MANIFEST_TYPE", o::MANIFEST_TYPE.into()),
        ("MAX_MANIFEST", o::MAX_MANIFEST.to_string()),
        ("MAX_PACKS", o::MAX_PACKS.to_string()),
    ];
    assert_eq!(rows.len(), code.len());
    for (row, (name, value)) in rows.iter().zip(code) {
        assert_eq!(row[0], name);
        assert_eq!(row[1], value, "{name}");
    }
}

#[test]
fn signature_files_match() {
    use blockcast::sign::{roothash, Kind};
    let rows = table(&doc(), "#### Signature files (checked)");
    assert_eq!(rows.len(), Kind::ALL.len());
    for (row, kind) in rows.iter().zip(Kind::ALL) {
        assert_eq!(row[0], format!("INDEX{}", kind.suffix()));
        assert_eq!(row[1], blockcast::oci::signature_kind(kind), "{kind:?}");
        assert_eq!(row[2], kind.max_len().to_string(), "{kind:?}");
    }
    let align = format!("`JSON_ALIGN` ({})", roothash::JSON_ALIGN);
    assert!(doc().contains(&align), "{align}");
}

#[test]
fn lifecycle_constants_match() {
    use blockcast::prune::{releases, REPACK_DEAD_PERCENT};
    use blockcast::store::lease;
    let rows = table(&doc(), "#### Lifecycle constants (checked)");
    let code: Vec<(&str, String)> = vec![
        ("LEASE_FOR", lease::LEASE_FOR.as_secs().to_string()),
        ("REPACK_DEAD_PERCENT", REPACK_DEAD_PERCENT.to_string()),
        (
            "ABSENT_CACHE_CONTROL",
            blockcast::serve::ABSENT_CACHE_CONTROL.into(),
        ),
        ("INDEXES", releases::INDEXES.into()),
        ("RETIRED", releases::RETIRED.into()),
        ("LEASES", lease::LEASES.into()),
        ("LOCK_FILE", lease::LOCK_FILE.into()),
    ];
    assert_eq!(rows.len(), code.len());
    for (row, (name, value)) in rows.iter().zip(code) {
        assert_eq!(row[0], name);
        assert_eq!(row[1], value, "{name}");
    }
}

/// The names, sizes and order the document gives are those `make --pack` writes: a pack
/// header and table of contents as the tables say, named by its SHA-256, and a map named
/// by the index digest whose trailer is the SHA-256 of the rest.
#[test]
fn a_written_pack_and_map_read_as_documented() {
    use blockcast::pack::format as p;
    use sha2::{Digest, Sha256};
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let index = t.path().join("e.bcidx");
    let img = concat!(env!("CARGO_MANIFEST_DIR"), "/testimages/erofs-v2.img");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_blockcast"))
        .args(["make", img, "--pack", "--store"])
        .arg(&store)
        .arg("--index")
        .arg(&index)
        .status()
        .unwrap();
    assert!(st.success());
    let ix = blockcast::index::Index::open(&index).unwrap();
    let u32_at =
        |b: &[u8], f: &Field| u32::from_le_bytes(b[f.offset..f.offset + 4].try_into().unwrap());
    let u64_at =
        |b: &[u8], f: &Field| u64::from_le_bytes(b[f.offset..f.offset + 8].try_into().unwrap());
    let digest_hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let file = std::fs::read(
        store
            .join("packmaps")
            .join(format!("{}.bcpmap", digest_hex(&ix.digest()))),
    )
    .unwrap();
    // The file is one zstd frame of the map.
    let map = zstd::bulk::decompress(&file, 64 << 20).unwrap();
    let (body, trailer) = map.split_at(map.len() - 32);
    assert_eq!(Sha256::digest(body)[..], *trailer);
    assert_eq!(&body[..8], &p::MAP_MAGIC);
    assert_eq!(u32_at(body, &p::M_VERSION), p::MAP_VERSION);
    let f = &p::M_INDEX_DIGEST;
    assert_eq!(body[f.offset..f.offset + 32], ix.digest());
    let packs = u32_at(body, &p::M_PACK_COUNT) as usize;
    let entries = u64_at(body, &p::M_ENTRY_COUNT) as usize;
    assert_eq!(
        body.len(),
        p::MAP_HEADER_SIZE + 32 * packs + p::MAP_ENTRY_SIZE * entries
    );
    let digests: Vec<&[u8]> = body[p::MAP_HEADER_SIZE..p::MAP_HEADER_SIZE + 32 * packs]
        .chunks(32)
        .collect();
    assert!(digests.windows(2).all(|w| w[0] < w[1]), "digests ascend");
    let first = p::MAP_HEADER_SIZE + 32 * packs;
    let first_chunk = ix.records().find(|r| !r.is_zero()).unwrap().unit();
    let e = &body[first..first + p::MAP_ENTRY_SIZE];
    assert_eq!(e[p::E_KIND.offset], p::KIND_CHUNK);
    assert_eq!(
        e[p::E_ID.offset..p::E_ID.offset + 32],
        first_chunk.id.0,
        "image order"
    );
    assert_eq!(u32_at(e, &p::E_SIZE), first_chunk.stored_size);
    for d in digests {
        let pack = std::fs::read(
            store
                .join("packs")
                .join(format!("{}.bcpack", digest_hex(d))),
        )
        .unwrap();
        assert_eq!(
            Sha256::digest(&pack)[..],
            *d,
            "a pack is named by its SHA-256"
        );
        assert_eq!(&pack[..8], &p::PACK_MAGIC);
        assert_eq!(u32_at(&pack, &p::P_VERSION), p::PACK_VERSION);
        let count = u32_at(&pack, &p::P_ENTRY_COUNT) as usize;
        let toc = u64_at(&pack, &p::P_TOC_OFFSET) as usize;
        assert_eq!(toc + count * p::TOC_ENTRY_SIZE, pack.len());
        let mut end = p::PACK_HEADER_SIZE as u64;
        for e in pack[toc..].chunks(p::TOC_ENTRY_SIZE) {
            assert_eq!(u64_at(e, &p::T_OFFSET), end, "objects back to back");
            end += u64::from(u32_at(e, &p::T_SIZE));
        }
        assert_eq!(end as usize, toc);
    }
}
