//! The sessions' timers: a hashed timing wheel (Varghese and Lauck, "Hashed
//! and Hierarchical Timing Wheels", 1987, scheme 4). One timer per
//! session, keyed by its slot; arming, disarming and expiring are O(1),
//! a bucket is a doubly linked list threaded through the slots, and
//! nothing is allocated once the slots exist. A deadline beyond one turn
//! of the wheel waits in its bucket and is looked at once a turn. Time is
//! milliseconds from the loop's start, given by the caller.

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Link {
    deadline: u64,
    bucket: u32,
    prev: u32,
    next: u32,
}

const UNARMED: Link = Link {
    deadline: 0,
    bucket: NIL,
    prev: NIL,
    next: NIL,
};

pub struct Wheel {
    tick_ms: u64,
    heads: Vec<u32>,
    links: Vec<Link>,
    /// The last tick whose bucket was expired.
    current: u64,
    armed: usize,
    /// No timer fires before this tick ends (a bound: a timer disarmed
    /// since may have set it), so an idle loop sleeps until then instead
    /// of waking every tick.
    next: Option<u64>,
}

impl Wheel {
    /// A wheel of `buckets` buckets of `tick_ms` each, at time `now`.
    pub fn new(tick_ms: u64, buckets: usize, now: u64) -> Wheel {
        Wheel {
            tick_ms,
            heads: vec![NIL; buckets],
            links: Vec::new(),
            current: now / tick_ms,
            armed: 0,
            next: None,
        }
    }

    /// Sets `slot`'s timer to `deadline`, replacing the one it had.
    pub fn arm(&mut self, slot: usize, deadline: u64) {
        self.disarm(slot);
        if self.links.len() <= slot {
            self.links.resize(slot + 1, UNARMED);
        }
        let tick = deadline.div_ceil(self.tick_ms).max(self.current + 1);
        let bucket = (tick % self.heads.len() as u64) as u32;
        let head = self.heads[bucket as usize];
        self.links[slot] = Link {
            deadline,
            bucket,
            prev: NIL,
            next: head,
        };
        if head != NIL {
            self.links[head as usize].prev = slot as u32;
        }
        self.heads[bucket as usize] = slot as u32;
        self.armed += 1;
        self.next = Some(self.next.map_or(tick, |n| n.min(tick)));
    }

    /// Stops `slot`'s timer, if armed.
    pub fn disarm(&mut self, slot: usize) {
        let Some(&Link {
            bucket, prev, next, ..
        }) = self.links.get(slot)
        else {
            return;
        };
        if bucket == NIL {
            return;
        }
        match prev {
            NIL => self.heads[bucket as usize] = next,
            p => self.links[p as usize].next = next,
        }
        if next != NIL {
            self.links[next as usize].prev = prev;
        }
        self.links[slot] = UNARMED;
        self.armed -= 1;
        if self.armed == 0 {
            self.next = None;
        }
    }

    /// Disarms every timer due by `now` and adds its slot to `due`.
    pub fn expire(&mut self, now: u64, due: &mut Vec<usize>) {
        let target = now / self.tick_ms;
        // Past one turn every bucket has been looked at once.
        let first = self
            .current
            .max(target.saturating_sub(self.heads.len() as u64));
        for tick in first + 1..=target {
            let mut at = self.heads[(tick % self.heads.len() as u64) as usize];
            while at != NIL {
                let link = self.links[at as usize];
                if link.deadline <= now {
                    self.disarm(at as usize);
                    due.push(at as usize);
                }
                at = link.next;
            }
        }
        self.current = self.current.max(target);
        if self.next.is_some_and(|n| n <= self.current) {
            self.next = self.first_armed();
        }
    }

    /// The first tick after the current one whose bucket holds a timer (of
    /// this turn or a later one).
    fn first_armed(&self) -> Option<u64> {
        let n = self.heads.len() as u64;
        (self.armed > 0)
            .then(|| {
                (self.current + 1..=self.current + n).find(|t| self.heads[(t % n) as usize] != NIL)
            })
            .flatten()
    }

    /// When [`Wheel::expire`] next has something to look at: the end of
    /// the first tick that may hold a timer due, if one is armed.
    pub fn next_tick(&self) -> Option<u64> {
        self.next.map(|t| t * self.tick_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expired(w: &mut Wheel, now: u64) -> Vec<usize> {
        let mut due = Vec::new();
        w.expire(now, &mut due);
        due.sort();
        due
    }

    #[test]
    fn a_timer_fires_at_the_end_of_its_tick_and_only_once() {
        let mut w = Wheel::new(4, 8, 0);
        w.arm(3, 10);
        w.arm(1, 4);
        assert_eq!(w.next_tick(), Some(4));
        assert_eq!(expired(&mut w, 4), [1]);
        assert_eq!(expired(&mut w, 9), Vec::<usize>::new());
        assert_eq!(expired(&mut w, 12), [3]);
        assert_eq!(expired(&mut w, 100), Vec::<usize>::new());
        assert_eq!(w.next_tick(), None);
    }

    #[test]
    fn an_idle_wheel_sleeps_until_its_first_timer_not_every_tick() {
        let mut w = Wheel::new(4, 8, 0);
        w.arm(0, 20);
        assert_eq!(w.next_tick(), Some(20));
        w.arm(1, 100);
        assert_eq!(expired(&mut w, 20), [0]);
        // Tick 25's bucket, looked at once a turn (8 ticks) before it.
        assert_eq!(w.next_tick(), Some(36));
        assert_eq!(expired(&mut w, 36), Vec::<usize>::new());
        assert_eq!(w.next_tick(), Some(68));
        assert_eq!(expired(&mut w, 68), Vec::<usize>::new());
        assert_eq!(w.next_tick(), Some(100));
        assert_eq!(expired(&mut w, 100), [1]);
        assert_eq!(w.next_tick(), None);
        w.arm(2, 8);
        w.disarm(2);
        assert_eq!(w.next_tick(), None);
    }

    #[test]
    fn a_deadline_beyond_one_turn_waits_for_its_turn() {
        let mut w = Wheel::new(4, 8, 0);
        w.arm(0, 100);
        assert_eq!(expired(&mut w, 99), Vec::<usize>::new());
        assert_eq!(expired(&mut w, 100), [0]);
    }

    #[test]
    fn disarmed_and_rearmed_timers_fire_at_their_last_deadline() {
        let mut w = Wheel::new(4, 8, 0);
        for slot in 0..5 {
            w.arm(slot, 8);
        }
        w.disarm(2);
        w.disarm(0);
        w.arm(4, 20);
        assert_eq!(expired(&mut w, 8), [1, 3]);
        assert_eq!(expired(&mut w, 20), [4]);
    }

    #[test]
    fn a_late_loop_still_fires_every_timer_due() {
        let mut w = Wheel::new(4, 8, 0);
        w.arm(0, 5);
        w.arm(1, 30);
        w.arm(2, 1000);
        assert_eq!(expired(&mut w, 500), [0, 1]);
        w.arm(3, 2);
        assert_eq!(
            expired(&mut w, 504),
            [3],
            "a past deadline fires at the next tick"
        );
    }
}
