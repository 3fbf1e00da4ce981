# Sourced by tools/delta-bench and tools/bench-packs: the Debian trees and their images.
#
# The caller sets: delta (work directory), bench (its parent), mirror, and log and die
# functions; it runs as root. Trees: $delta/v1 (bookworm minbase), $delta/v2 (v1 after
# apt-get upgrade from bookworm-updates and bookworm-security: a security update),
# $delta/v3 (v2 with packages added, $v3_packages); build_wheels makes trees of Python
# wheels (an application layer) for tools/delta-bench. Images: make_image, after
# setup_images [--trees DIR] DIR VERSION... (the versions whose ext4 images must be of
# one size; the trees are DIR/vVERSION, $delta/vVERSION by default).

mirror=${mirror:-http://deb.debian.org/debian}
v3_packages=${v3_packages:-python3-minimal curl ca-certificates}

# plain_minbase DIR: is DIR a debootstrap --variant=minbase of bookworm from $mirror,
# untouched since (nothing installed beyond what debootstrap logged, no other sources)?
plain_minbase() {
    local d=$1 pkg
    [[ -d $d && ! -e $d/debootstrap && -f $d/var/log/bootstrap.log ]] || return 1
    [[ $(cat "$d/etc/debian_version" 2>/dev/null) == 12.* ]] || return 1
    [[ $(cat "$d/etc/apt/sources.list" 2>/dev/null) == "deb $mirror bookworm main" ]] || return 1
    [[ -z $(ls -A "$d/etc/apt/sources.list.d" 2>/dev/null) ]] || return 1
    [[ -f $d/var/lib/dpkg/status ]] || return 1
    dpkg-query --admindir="$d/var/lib/dpkg" -W -f '${Package}\n' >"$delta/minbase.pkgs" || return 1
    grep -qx apt "$delta/minbase.pkgs" || return 1
    # Every installed package is one debootstrap installed (and logged).
    while read -r pkg; do
        grep -q "^\(Unpacking\|Setting up\) ${pkg}[ :]" "$d/var/log/bootstrap.log" || return 1
    done <"$delta/minbase.pkgs"
    # minbase = Priority: required + apt and their dependencies: no other tool of
    # priority important or standard (adduser, gpgv and the keyring are apt's).
    local extra
    extra=$(dpkg-query --admindir="$d/var/lib/dpkg" -W -f '${Priority} ${Package}\n' |
        grep '^\(important\|standard\) ' |
        grep -v '^important \(adduser\|debian-archive-keyring\|gpgv\)$\|^standard util-linux-extra$' || true)
    [[ -z $extra ]]
}

# apt_clean DIR: what makes the image the installed system and not apt's working files
# (as apt-get clean, plus the package lists): downloaded .debs, lists, binary caches.
apt_clean() {
    rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/*.bin
    rm -rf "$1"/var/lib/apt/lists/*
}

packages() { # TREE: dpkg-query -W of the tree, one "name<TAB>version" a line
    dpkg-query --admindir="$1/var/lib/dpkg" -W | sort
}

# chroot_sh DIR SCRIPT: runs SCRIPT (sh -ec) in the chroot DIR with /proc, /sys and /dev,
# no daemon allowed to start.
chroot_sh() {
    local r=$1 script=$2
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
    chmod 755 "$r/usr/sbin/policy-rc.d"
    # A private mount namespace: /proc, /sys and /dev vanish with it, whatever happens.
    # shellcheck disable=SC2016 # expanded by the inner bash
    unshare --mount --propagation private -- bash -euc '
        r=$1
        mount -t proc proc "$r/proc"
        mount -t sysfs sysfs "$r/sys"
        mount --rbind /dev "$r/dev"
        chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            LC_ALL=C DEBIAN_FRONTEND=noninteractive sh -ec "$2"
    ' _ "$r" "$script" >&2 || return 1
    rm -f "$r/usr/sbin/policy-rc.d"
}

# build_v1: $delta/v1, a copy of $bench/bookworm-minbase when that is a plain minbase,
# else a new debootstrap.
build_v1() {
    local v1=$delta/v1
    [[ -d $v1 ]] && return 0
    rm -rf --one-file-system "$v1.partial"
    local shared_minbase=$bench/bookworm-minbase
    if plain_minbase "$shared_minbase"; then
        log "v1: copying the plain bookworm minbase at $shared_minbase"
        cp -a "$shared_minbase" "$v1.partial"
    else
        [[ -d $shared_minbase ]] && log "v1: $shared_minbase is not a plain bookworm minbase; not using it"
        log "v1: debootstrap --variant=minbase bookworm (a few minutes)"
        debootstrap --variant=minbase bookworm "$v1.partial" "$mirror" >&2
    fi
    apt_clean "$v1.partial"
    mv "$v1.partial" "$v1"
}

# build_v2: $delta/v2, apt-get upgrade of a copy of v1 from bookworm-updates and
# bookworm-security.
build_v2() {
    local v2=$delta/v2
    [[ -d $v2 ]] && return 0
    rm -rf --one-file-system "$v2.partial"
    log "v2: apt-get upgrade of a copy of v1 from bookworm-updates and bookworm-security"
    cp -a "$delta/v1" "$v2.partial"
    cat >"$v2.partial/etc/apt/sources.list.d/bookworm-updates.list" <<EOF
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    chroot_sh "$v2.partial" "
        apt-get update
        apt-get -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade" ||
        die "apt-get upgrade in $v2.partial failed"
    apt_clean "$v2.partial"
    mv "$v2.partial" "$v2"
}

# build_v3: $delta/v3, a copy of v2 with $v3_packages installed (from the same sources).
# The package list is kept in $delta/v3.wanted: another list makes the tree again.
build_v3() {
    local v3=$delta/v3
    if [[ -d $v3 && $(cat "$delta/v3.wanted" 2>/dev/null) == "$v3_packages" ]]; then
        return 0
    fi
    rm -rf --one-file-system "$v3" "$v3.partial"
    log "v3: apt-get install $v3_packages into a copy of v2"
    cp -a "$delta/v2" "$v3.partial"
    chroot_sh "$v3.partial" "
        apt-get update
        apt-get -y --no-install-recommends -o Dpkg::Options::=--force-confdef \
            -o Dpkg::Options::=--force-confold install $v3_packages" ||
        die "apt-get install in $v3.partial failed"
    apt_clean "$v3.partial"
    echo "$v3_packages" >"$delta/v3.wanted"
    mv "$v3.partial" "$v3"
}

tree_kib() { du -s --block-size=1024 "$1" | cut -f1; }

# build_wheels DIR SPEC...: DIR, a Python application layer: the wheels SPEC... (name==
# version) installed by pip --target, without dependencies, binary wheels only and those of
# CPython 3.11 on x86_64 manylinux whatever Python runs pip (so the tree does not depend
# on it), no bytecode; scripts' #! line /usr/bin/python3 (pip writes its own interpreter's
# path), every time 0. The SPEC list is kept in DIR.wanted: another list makes it again.
build_wheels() {
    local dir=$1 f
    shift
    if [[ -d $dir && $(cat "$dir.wanted" 2>/dev/null) == "$*" ]]; then
        return 0
    fi
    rm -rf --one-file-system "$dir" "$dir.partial"
    log "${dir#"$delta"/}: pip install --target of $*"
    (
        umask 022
        python3 -m pip install --quiet --no-deps --only-binary=:all: --no-compile \
            --disable-pip-version-check --root-user-action=ignore --no-warn-script-location \
            --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
            --target "$dir.partial" "$@" >&2
    ) || die "pip install --target $dir.partial failed"
    for f in "$dir.partial"/bin/*; do
        if [[ -f $f ]]; then sed -i '1s|^#!.*python.*$|#!/usr/bin/python3|' "$f"; fi
    done
    find "$dir.partial" -exec touch -h -d @0 {} +
    echo "$*" >"$dir.wanted"
    mv "$dir.partial" "$dir"
}

# Fixed UUIDs, the same for every version (as an A/B build with a fixed UUID would have;
# ext4's metadata checksums are seeded by it), fixed times (0), every file owned by root.
uuid_erofs=b10c4ca5-7e57-4000-8004-000000000001
uuid_ext4=b10c4ca5-7e57-4000-8004-000000000002
ext4_hash_seed=b10c4ca5-7e57-4000-8004-000000000003

# setup_images [--trees TREES] DIR VERSION...: images go into DIR, made from the trees
# TREES/vVERSION (TREES is $delta unless given); ext4 images of these versions get the
# same size (a fixed partition), 15% above the largest tree.
setup_images() {
    tree_root=$delta
    if [[ $1 == --trees ]]; then
        tree_root=$2
        shift 2
    fi
    img=$1
    shift
    mkdir -p "$img"
    local v sizes=()
    for v in "$@"; do sizes+=("$(tree_kib "$tree_root/v$v")"); done
    ext4_mib=$((($(printf '%s\n' "${sizes[@]}" | sort -n | tail -n1) * 115 / 100 + 1023) / 1024))
    # A private mke2fs.conf, so that the host's defaults do not matter.
    mke2fs_conf=$img/mke2fs.conf
    cat >"$mke2fs_conf" <<'EOF'
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
EOF
    # An ext4 image of another size (another set of versions) is made again.
    if [[ $(cat "$img/ext4.mib" 2>/dev/null) != "$ext4_mib" ]]; then
        rm -f "$img"/ext4-v*.img
        echo "$ext4_mib" >"$img/ext4.mib"
    fi
}

# make_image KIND VERSION: $img/KIND-vVERSION.img from tree $tree_root/vVERSION (the
# directories setup_images chose)
make_image() {
    local kind=$1 ver=$2 tree out
    tree=$tree_root/v$ver out=$img/$kind-v$ver.img
    [[ -f $out ]] && return 0
    log "mkfs $kind v$ver"
    rm -f "$out.partial"
    case $kind in
        erofs) mkfs.erofs --quiet -T0 -U"$uuid_erofs" --all-root "$out.partial" "$tree" >&2 ;;
        erofs-lz4hc) mkfs.erofs --quiet -zlz4hc -T0 -U"$uuid_erofs" --all-root "$out.partial" "$tree" >&2 ;;
        squashfs-zstd | squashfs-gzip)
            mksquashfs "$tree" "$out.partial" -comp "${kind#squashfs-}" -mkfs-time 0 -all-time 0 \
                -all-root -noappend -quiet -no-progress >&2 ;;
        ext4)
            # mkfs.ext4 -d copies every inode's ctime, which no copy of a tree can keep, and
            # its owners: so it reads the tree through the (fixed-time, all-root) erofs image.
            make_image erofs "$ver"
            # shellcheck disable=SC2016 # expanded by the inner bash
            unshare --mount --propagation private -- bash -euc '
                mnt=$(mktemp -d)
                mount -o ro,loop "$1" "$mnt"
                E2FSPROGS_FAKE_TIME=1 MKE2FS_CONFIG=$2 mkfs.ext4 -q -F -T default \
                    -U "$3" -E hash_seed="$4",root_owner=0:0,nodiscard -d "$mnt" "$5" "$6"M
                umount "$mnt"
                rmdir "$mnt"
            ' _ "$img/erofs-v$ver.img" "$mke2fs_conf" "$uuid_ext4" "$ext4_hash_seed" \
                "$out.partial" "$ext4_mib" >&2 || die "mkfs.ext4 of v$ver failed"
            ;;
    esac
    mv "$out.partial" "$out"
}
