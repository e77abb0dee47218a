//! The `threads` backend: ranks as threads of one process, meeting in a
//! mutex-guarded room. Each exchange is a round: every rank leaves its
//! part, the last to come computes the result (a sum in rank order, or
//! rank 0's message) for all, and the others wait for the round to close,
//! at most the timeout for sums. (No crate offers an in-process
//! all-reduce with failure and timeout; this is a few dozen lines on
//! `std`'s `Mutex` and `Condvar`.)

use super::{Backend, Collective};
use anyhow::{Result, bail};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// `world` handles, rank 0 first, on one room. A rank that waits longer
/// than `timeout` for the others at a sum stops every rank.
pub fn start_threads(world: usize, timeout: Duration) -> Vec<Collective> {
    let room = Arc::new(Room {
        state: Mutex::new(State {
            round: 0,
            parts: vec![None; world],
            result: Part::Sum(Vec::new()),
            failed: None,
        }),
        turn: Condvar::new(),
        timeout,
    });
    (0..world)
        .map(|rank| Collective::team(room.clone(), rank, world, "threads"))
        .collect()
}

struct Room {
    state: Mutex<State>,
    turn: Condvar,
    timeout: Duration,
}

#[derive(Clone, Debug)]
enum Part {
    Sum(Vec<f32>),
    Message(Option<Vec<u8>>),
}

struct State {
    /// Rounds closed so far.
    round: u64,
    /// What each rank brought to the open round.
    parts: Vec<Option<Part>>,
    /// The last closed round's result.
    result: Part,
    /// The first failure: every exchange from then on returns it.
    failed: Option<String>,
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked holding the lock left consistent state
        // (every write is a whole assignment), so the room stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings `part` to the open round and returns the round's result.
    fn exchange(&self, rank: usize, part: Part, timeout: Option<Duration>) -> Result<Part> {
        let mut state = self.lock();
        if let Some(f) = &state.failed {
            bail!("{f}");
        }
        let round = state.round;
        state.parts[rank] = Some(part);
        if state.parts.iter().all(Option::is_some) {
            let result = close(&mut state.parts);
            match result {
                Ok(result) => {
                    state.result = result.clone();
                    state.round += 1;
                    self.turn.notify_all();
                    return Ok(result);
                }
                Err(e) => {
                    state.failed = Some(format!("{e:#}"));
                    self.turn.notify_all();
                    return Err(e);
                }
            }
        }
        let started = Instant::now();
        loop {
            if let Some(f) = &state.failed {
                bail!("{f}");
            }
            if state.round > round {
                return Ok(state.result.clone());
            }
            state = match timeout {
                None => self.turn.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(limit) => {
                    let left = limit.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        let missing: Vec<String> = (state.parts.iter().enumerate())
                            .filter(|(_, p)| p.is_none())
                            .map(|(r, _)| r.to_string())
                            .collect();
                        let message = format!(
                            "rank {} did not reach the gradient exchange within {} s (it died or hangs); \
                             every rank stopped",
                            missing.join(", rank "),
                            limit.as_secs_f64()
                        );
                        state.failed = Some(message.clone());
                        self.turn.notify_all();
                        bail!(message);
                    }
                    self.turn
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// The result of a round whose parts are all in: the sum in rank order,
/// or rank 0's message. Ranks that brought different kinds or lengths
/// went different ways through training, which is a bug to stop on.
fn close(parts: &mut [Option<Part>]) -> Result<Part> {
    let parts: Vec<Part> = parts.iter_mut().map(|p| p.take().expect("all in")).collect();
    match &parts[0] {
        Part::Sum(first) => {
            let mut sum = first.clone();
            for (rank, part) in parts.iter().enumerate().skip(1) {
                let Part::Sum(values) = part else {
                    bail!(
                        "rank {rank} sent an order where rank 0 summed values: the ranks went different ways"
                    );
                };
                if values.len() != sum.len() {
                    bail!(
                        "rank {rank} summed {} values where rank 0 summed {}: the ranks went different ways",
                        values.len(),
                        sum.len()
                    );
                }
                sum.iter_mut().zip(values).for_each(|(s, v)| *s += v);
            }
            Ok(Part::Sum(sum))
        }
        Part::Message(message) => {
            if let Some(rank) = parts.iter().position(|p| matches!(p, Part::Sum(_))) {
                bail!("rank {rank} summed values where rank 0 sent an order: the ranks went different ways");
            }
            Ok(Part::Message(message.clone()))
        }
    }
}

impl Backend for Room {
    fn sum(&self, rank: usize, values: &mut [f32], patient: bool) -> Result<()> {
        let timeout = (!patient).then_some(self.timeout);
        match self.exchange(rank, Part::Sum(values.to_vec()), timeout)? {
            Part::Sum(sum) => values.copy_from_slice(&sum),
            Part::Message(_) => unreachable!("a sum round closes with a sum"),
        }
        Ok(())
    }

    fn broadcast(&self, rank: usize, message: Option<Vec<u8>>) -> Result<Vec<u8>> {
        match self.exchange(rank, Part::Message(message), None)? {
            Part::Message(Some(bytes)) => Ok(bytes),
            Part::Message(None) => bail!("rank 0 broadcast nothing"),
            Part::Sum(_) => unreachable!("a broadcast round closes with a message"),
        }
    }

    fn fail(&self, rank: usize, message: &str) {
        let mut state = self.lock();
        if state.failed.is_none() {
            state.failed = Some(format!("rank {rank} failed: {message}"));
        }
        self.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_threads<T: Send + 'static>(
        team: Vec<Collective>,
        work: impl Fn(Collective) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let work = Arc::new(work);
        let handles: Vec<_> = team
            .into_iter()
            .map(|c| {
                let work = work.clone();
                std::thread::spawn(move || work(c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn three_ranks_average_the_same_bits_and_hear_rank_0() {
        let team = start_threads(3, Duration::from_secs(10));
        let results = on_threads(team, |c| {
            let mut rounds = Vec::new();
            for round in 0..50 {
                let r = c.rank() as f32;
                let mut values = vec![r + 0.1 * round as f32, 3.0 * r, 1.0 / (r + 3.0)];
                c.average(&mut values).unwrap();
                rounds.push(values);
            }
            let order = c.broadcast(c.leads().then(|| b"step".to_vec())).unwrap();
            (rounds, order)
        });
        // Sums in rank order: every rank the same bits, the right means.
        for (rounds, order) in &results {
            assert_eq!(rounds, &results[0].0);
            assert_eq!(order, b"step");
        }
        let expected = (1.0 / 3.0 + 1.0 / 4.0 + 1.0 / 5.0) / 3.0;
        assert!((results[0].0[0][2] - expected).abs() < 1e-7);
        assert!((results[0].0[49][0] - (1.0 + 4.9)).abs() < 1e-5);
    }

    #[test]
    fn a_failing_rank_stops_the_others_with_its_name_and_reason() {
        let team = start_threads(3, Duration::from_secs(30));
        let results = on_threads(team, |c| {
            if c.rank() == 2 {
                c.fail("the fake-score loss is NaN");
                return String::new();
            }
            format!("{:#}", c.average(&mut [1.0]).unwrap_err())
        });
        for e in &results[..2] {
            assert!(e.contains("rank 2 failed: the fake-score loss is NaN"), "{e}");
        }
    }

    #[test]
    fn a_rank_that_never_comes_is_named_after_the_timeout() {
        let team = start_threads(2, Duration::from_millis(200));
        let results = on_threads(team, |c| {
            if c.rank() == 1 {
                // Dies before the exchange (its handle dropped, never used).
                return String::new();
            }
            format!("{:#}", c.average(&mut [1.0]).unwrap_err())
        });
        assert!(
            results[0].contains("rank 1 did not reach the gradient exchange within 0.2 s"),
            "{}",
            results[0]
        );
    }

    #[test]
    fn ranks_that_go_different_ways_are_stopped() {
        let team = start_threads(2, Duration::from_secs(10));
        let results = on_threads(team, |c| {
            let mut values = vec![0.0; 1 + c.rank()];
            format!("{:#}", c.average(&mut values).unwrap_err())
        });
        for e in &results {
            assert!(e.contains("rank 1 summed 2 values where rank 0 summed 1"), "{e}");
        }
    }
}
