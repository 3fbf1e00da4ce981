//! Ordering the copies inside an output that is updated in place: a chunk is copied only
//! after every copy that reads the bytes it overwrites. Copies that wait on each other in a
//! cycle have their source saved to a bounded spill file first; past the bound, a copy
//! is dropped and its chunk fetched from the store instead.

/// Moves a chunk from `src` to `dst` within the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy {
    pub record: usize,
    pub src: u64,
    pub dst: u64,
    pub len: u32,
}

/// One step of the schedule, in the order it must run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Copies that may run together: none overwrites another's source.
    Wave(Vec<usize>),
    /// Save this copy's source to the spill file now; it runs later from there.
    Spill(usize),
    /// Do not copy: fetch the chunk from the store after all copies.
    Drop(usize),
}

fn overlaps(a: u64, alen: u32, b: u64, blen: u32) -> bool {
    a < b + u64::from(blen) && b < a + u64::from(alen)
}

/// Schedules `copies`, whose destinations are disjoint and sorted. At most `spill_limit`
/// bytes are spilled.
pub fn schedule(copies: &[Copy], spill_limit: u64) -> Vec<Step> {
    let n = copies.len();
    // succ[a]: copies that overwrite a's source, so must wait for a.
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting = vec![0usize; n];
    for (a, c) in copies.iter().enumerate() {
        let first = copies.partition_point(|b| b.dst + u64::from(b.len) <= c.src);
        for (b, d) in copies.iter().enumerate().skip(first) {
            if d.dst >= c.src + u64::from(c.len) {
                break;
            }
            if b != a && overlaps(c.src, c.len, d.dst, d.len) {
                succ[a].push(b);
                waiting[b] += 1;
            }
        }
    }
    let mut released = vec![false; n];
    let mut done = vec![false; n];
    let mut steps = Vec::new();
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut remaining = n;
    let mut spilled = 0u64;
    let mut cursor = 0;
    let release = |a: usize, waiting: &mut Vec<usize>, next: &mut Vec<usize>| {
        for &b in &succ[a] {
            waiting[b] -= 1;
            if waiting[b] == 0 {
                next.push(b);
            }
        }
    };
    while remaining > 0 {
        if ready.is_empty() {
            // A cycle: free the first copy still reading the output.
            while released[cursor] || done[cursor] {
                cursor += 1;
            }
            let a = cursor;
            released[a] = true;
            if spilled + u64::from(copies[a].len) <= spill_limit {
                spilled += u64::from(copies[a].len);
                steps.push(Step::Spill(a));
            } else {
                done[a] = true;
                remaining -= 1;
                steps.push(Step::Drop(a));
            }
            let mut next = Vec::new();
            release(a, &mut waiting, &mut next);
            ready = next.into_iter().filter(|&b| !done[b]).collect();
            if !done[a] && waiting[a] == 0 {
                ready.push(a);
            }
            continue;
        }
        let wave: Vec<usize> = ready.drain(..).filter(|&a| !done[a]).collect();
        let mut next = Vec::new();
        for &a in &wave {
            done[a] = true;
            remaining -= 1;
            if !released[a] {
                released[a] = true;
                release(a, &mut waiting, &mut next);
            }
        }
        if !wave.is_empty() {
            steps.push(Step::Wave(wave));
        }
        ready = next.into_iter().filter(|&b| !done[b]).collect();
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(record: usize, src: u64, dst: u64) -> Copy {
        Copy {
            record,
            src,
            dst,
            len: 10,
        }
    }

    fn range(c: &Copy, at: u64) -> std::ops::Range<usize> {
        at as usize..(at + u64::from(c.len)) as usize
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum State {
        Pending,
        Spilled,
        Ran,
        Dropped,
    }

    /// Replays a schedule on a model output whose byte `i` starts as `i`, with each copy's
    /// own length, and checks it is a schedule of exactly `copies`: each copy runs once,
    /// reading its source's original bytes (from the output or from its spill), or is
    /// dropped once instead; a spill comes before its copy runs, and no more than
    /// `spill_limit` bytes are spilled; the copies of a wave write neither the same bytes
    /// nor a source another of them reads from the output. The dropped chunks then come
    /// from the store, and every destination must hold its copy's original source bytes.
    /// Returns the number of spills and drops.
    fn replay(copies: &[Copy], steps: &[Step], spill_limit: u64) -> (usize, usize) {
        let size = copies
            .iter()
            .map(|c| c.src.max(c.dst) + u64::from(c.len))
            .max()
            .unwrap_or(0) as usize;
        let original: Vec<u64> = (0..size as u64).collect();
        let mut cells = original.clone();
        let mut written = vec![false; size];
        let mut state = vec![State::Pending; copies.len()];
        let mut saved: Vec<Option<Vec<u64>>> = vec![None; copies.len()];
        let mut spilled = 0u64;
        let (mut spills, mut drops) = (0, 0);
        for step in steps {
            match *step {
                Step::Spill(a) => {
                    assert_eq!(state[a], State::Pending, "spill of copy {a}");
                    let c = copies[a];
                    saved[a] = Some(cells[range(&c, c.src)].to_vec());
                    state[a] = State::Spilled;
                    spilled += u64::from(c.len);
                    assert!(spilled <= spill_limit, "{spilled} bytes spilled");
                    spills += 1;
                }
                Step::Drop(a) => {
                    assert_eq!(state[a], State::Pending, "drop of copy {a}");
                    state[a] = State::Dropped;
                    drops += 1;
                }
                Step::Wave(ref wave) => {
                    for (i, &a) in wave.iter().enumerate() {
                        for &b in &wave[i + 1..] {
                            let (x, y) = (copies[a], copies[b]);
                            assert!(
                                !overlaps(x.dst, x.len, y.dst, y.len),
                                "copies {a} and {b} of one wave write the same bytes"
                            );
                        }
                        for &b in wave.iter().filter(|&&b| b != a && saved[b].is_none()) {
                            let (x, y) = (copies[a], copies[b]);
                            assert!(
                                !overlaps(x.dst, x.len, y.src, y.len),
                                "copy {a} overwrites the source of copy {b} in the same wave"
                            );
                        }
                    }
                    // Every copy of the wave reads before any writes: with the checks
                    // above, that is what any order of running them would read.
                    let reads: Vec<Vec<u64>> = wave
                        .iter()
                        .map(|&a| {
                            let c = copies[a];
                            assert!(
                                matches!(state[a], State::Pending | State::Spilled),
                                "copy {a} runs again or after its drop"
                            );
                            state[a] = State::Ran;
                            let data = saved[a]
                                .take()
                                .unwrap_or_else(|| cells[range(&c, c.src)].to_vec());
                            assert!(
                                data == original[range(&c, c.src)],
                                "copy {a} read overwritten bytes"
                            );
                            data
                        })
                        .collect();
                    for (&a, data) in wave.iter().zip(reads) {
                        let c = copies[a];
                        for at in range(&c, c.dst) {
                            assert!(!written[at], "byte {at} written twice");
                            written[at] = true;
                        }
                        cells[range(&c, c.dst)].copy_from_slice(&data);
                    }
                }
            }
        }
        for (a, c) in copies.iter().enumerate() {
            match state[a] {
                State::Ran => {}
                State::Dropped => {
                    cells[range(c, c.dst)].copy_from_slice(&original[range(c, c.src)]);
                }
                other => panic!("copy {a} never ran: {other:?}"),
            }
        }
        for (a, c) in copies.iter().enumerate() {
            assert!(
                cells[range(c, c.dst)] == original[range(c, c.src)],
                "copy {a}: wrong bytes at its destination"
            );
        }
        (spills, drops)
    }

    #[test]
    fn chain_runs_in_order_without_spilling() {
        let copies = [copy(0, 10, 0), copy(1, 20, 10), copy(2, 30, 20)];
        let steps = schedule(&copies, 0);
        assert_eq!(replay(&copies, &steps, 0), (0, 0));
    }

    #[test]
    fn swap_spills_one() {
        let copies = [copy(0, 50, 0), copy(1, 0, 50)];
        let steps = schedule(&copies, 100);
        assert_eq!(replay(&copies, &steps, 100), (1, 0));
    }

    #[test]
    fn swap_without_spill_room_drops_one() {
        let copies = [copy(0, 50, 0), copy(1, 0, 50)];
        let steps = schedule(&copies, 5);
        assert_eq!(replay(&copies, &steps, 5), (0, 1));
    }

    #[test]
    fn rotation_of_many_spills_once() {
        let copies: Vec<Copy> = (0..10)
            .map(|i| copy(i, ((i + 1) % 10 * 10) as u64, (i * 10) as u64))
            .collect();
        let steps = schedule(&copies, 1000);
        assert_eq!(replay(&copies, &steps, 1000), (1, 0));
    }

    #[test]
    fn unaligned_overlaps_are_respected() {
        let copies = [
            Copy {
                record: 0,
                src: 5,
                dst: 0,
                len: 10,
            },
            Copy {
                record: 1,
                src: 3,
                dst: 10,
                len: 10,
            },
            Copy {
                record: 2,
                src: 0,
                dst: 20,
                len: 10,
            },
        ];
        let steps = schedule(&copies, 1000);
        replay(&copies, &steps, 1000);
    }

    /// A short copy whose source lies inside the tail of a longer one's destination: only
    /// the longer copy's length says they overlap.
    #[test]
    fn lengths_differ() {
        let copies = [
            Copy {
                record: 0,
                src: 40,
                dst: 0,
                len: 30,
            },
            Copy {
                record: 1,
                src: 20,
                dst: 30,
                len: 4,
            },
        ];
        let steps = schedule(&copies, 1000);
        assert_eq!(replay(&copies, &steps, 1000), (0, 0));
        assert_eq!(steps, [Step::Wave(vec![1]), Step::Wave(vec![0])]);
    }

    /// Outputs rebuilt from shuffled chunks of many lengths, their sources anywhere in the
    /// old output (some read twice, some overlapping their own destination), under spill
    /// bounds from none to room for all.
    #[test]
    fn shuffled_outputs_replay() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |below: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        };
        let (mut spills, mut drops) = (0, 0);
        for _ in 0..300 {
            let n = 1 + next(24) as usize;
            let lens: Vec<u32> = (0..n).map(|_| 1 + next(40) as u32).collect();
            let size: u64 = lens.iter().map(|&l| u64::from(l)).sum::<u64>() + next(20);
            let mut copies = Vec::new();
            let mut dst = 0;
            for (record, &len) in lens.iter().enumerate() {
                dst += next(3);
                if dst + u64::from(len) > size {
                    break;
                }
                let src = next(size - u64::from(len) + 1);
                copies.push(Copy {
                    record,
                    src,
                    dst,
                    len,
                });
                dst += u64::from(len);
            }
            for limit in [0, next(size), size, u64::MAX] {
                let steps = schedule(&copies, limit);
                let (s, d) = replay(&copies, &steps, limit);
                spills += s;
                drops += d;
            }
        }
        // The cases exercise both ways of breaking a cycle.
        assert!(spills > 0 && drops > 0, "spills {spills}, drops {drops}");
    }
}
