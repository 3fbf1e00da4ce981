//! Throughput of the pieces `make` spends its time in: cutting, hashing, compressing.

use blockcast::chunk::ChunkId;
use blockcast::chunker::{ChunkParams, Chunker};
use blockcast::store::codec::Compressor;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn sample(len: usize) -> Vec<u8> {
    // Half text-like (compressible), half pseudo-random.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 65536) % 2 == 0 {
                b"the quick brown fox jumps over "[(x % 31) as usize]
            } else {
                (x >> 32) as u8
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = sample(32 << 20);
    let chunker = Chunker::new(ChunkParams::from_avg(64 << 10).unwrap());
    let mut g = c.benchmark_group("make");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("cut serial", |b| {
        b.iter(|| chunker.cuts_serial(black_box(&data), data.len()))
    });
    g.bench_function("cut parallel", |b| {
        b.iter(|| chunker.cuts_parallel(black_box(&data), data.len()))
    });
    g.bench_function("sha256", |b| {
        b.iter(|| data.chunks(65536).map(ChunkId::of).count())
    });
    g.bench_function("zstd-3", |b| {
        let mut z = Compressor::new(3).unwrap();
        b.iter(|| {
            data.chunks(65536)
                .map(|c| z.compress(c).unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
