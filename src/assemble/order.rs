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

    /// Replays a schedule on a model output and checks every copy read its original bytes.
    fn replay(copies: &[Copy], steps: &[Step]) -> (usize, usize) {
        let mut owner: Vec<Option<usize>> = vec![None; 200];
        let original: Vec<u64> = (0..200).collect();
        let mut cells = original.clone();
        let mut saved: Vec<Option<Vec<u64>>> = vec![None; copies.len()];
        let (mut spills, mut drops) = (0, 0);
        for step in steps {
            match step {
                Step::Spill(a) => {
                    let c = copies[*a];
                    saved[*a] = Some(cells[c.src as usize..c.src as usize + 10].to_vec());
                    spills += 1;
                }
                Step::Drop(_) => drops += 1,
                Step::Wave(wave) => {
                    // Copies of a wave run concurrently: any order must be correct.
                    for &a in wave.iter().rev() {
                        let c = copies[a];
                        let data = saved[a]
                            .clone()
                            .unwrap_or_else(|| cells[c.src as usize..c.src as usize + 10].to_vec());
                        assert_eq!(data, original[c.src as usize..c.src as usize + 10]);
                        for (k, v) in data.into_iter().enumerate() {
                            let at = c.dst as usize + k;
                            assert!(owner[at].is_none());
                            owner[at] = Some(a);
                            cells[at] = v;
                        }
                    }
                }
            }
        }
        (spills, drops)
    }

    #[test]
    fn chain_runs_in_order_without_spilling() {
        let copies = [copy(0, 10, 0), copy(1, 20, 10), copy(2, 30, 20)];
        let steps = schedule(&copies, 0);
        assert_eq!(replay(&copies, &steps), (0, 0));
    }

    #[test]
    fn swap_spills_one() {
        let copies = [copy(0, 50, 0), copy(1, 0, 50)];
        let steps = schedule(&copies, 100);
        assert_eq!(replay(&copies, &steps), (1, 0));
    }

    #[test]
    fn swap_without_spill_room_drops_one() {
        let copies = [copy(0, 50, 0), copy(1, 0, 50)];
        let steps = schedule(&copies, 5);
        assert_eq!(replay(&copies, &steps).1, 1);
    }

    #[test]
    fn rotation_of_many_spills_once() {
        let copies: Vec<Copy> = (0..10)
            .map(|i| copy(i, ((i + 1) % 10 * 10) as u64, (i * 10) as u64))
            .collect();
        let steps = schedule(&copies, 1000);
        assert_eq!(replay(&copies, &steps), (1, 0));
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
        replay(&copies, &steps);
    }
}
