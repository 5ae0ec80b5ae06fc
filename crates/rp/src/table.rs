//! The flows in memory: each expires a fixed time after its start, their number is bounded,
//! and a user may start only so many per minute. The caller passes `now`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Limits;

/// The rate window.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Why a flow cannot be started or found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The user started their quota of flows in the last minute.
    UserRate,
    /// The table holds its maximum of flows.
    Full,
    /// No such flow for this user (or it expired).
    Unknown,
}

struct Slot<F> {
    user: Vec<u8>,
    expires: Instant,
    flow: Arc<F>,
}

/// Flows by id, with expiry, a bound on their number and a per-user start rate.
pub struct FlowTable<F> {
    limits: Limits,
    flows: HashMap<String, Slot<F>>,
    // Start times in the last minute, per user. Bounded: a start needs a free place among
    // `max_flows`, so a minute holds at most `max_flows * (1 + 60 s / flow_lifetime)` starts.
    starts: HashMap<Vec<u8>, VecDeque<Instant>>,
    reserved: usize,
}

impl<F> std::fmt::Debug for FlowTable<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("flows", &self.flows.len())
            .field("reserved", &self.reserved)
            .finish()
    }
}

/// A place in the table, taken by [`FlowTable::admit`] before the flow exists (ordering takes
/// a while); give it back with [`FlowTable::insert`] or [`FlowTable::cancel`].
#[derive(Debug)]
#[must_use]
pub struct Reservation(());

impl<F> FlowTable<F> {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            flows: HashMap::new(),
            starts: HashMap::new(),
            reserved: 0,
        }
    }

    fn purge(&mut self, now: Instant) {
        self.flows.retain(|_, slot| slot.expires > now);
        self.starts.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
    }

    /// Takes a place for a new flow of `user`, or says why there is none. Nothing changes on
    /// refusal.
    pub fn admit(&mut self, user: &[u8], now: Instant) -> Result<Reservation, TableError> {
        self.purge(now);
        let started = self.starts.get(user).map_or(0, VecDeque::len);
        if started >= self.limits.flows_per_user_per_minute as usize {
            return Err(TableError::UserRate);
        }
        if self.flows.len() + self.reserved >= self.limits.max_flows {
            return Err(TableError::Full);
        }
        self.starts.entry(user.to_vec()).or_default().push_back(now);
        self.reserved += 1;
        Ok(Reservation(()))
    }

    /// Stores the flow started on `reservation` under `id`.
    pub fn insert(
        &mut self,
        reservation: Reservation,
        id: String,
        user: Vec<u8>,
        flow: F,
        now: Instant,
    ) {
        let Reservation(()) = reservation;
        self.reserved = self.reserved.saturating_sub(1);
        let expires = now + self.limits.flow_lifetime;
        self.flows.insert(
            id,
            Slot {
                user,
                expires,
                flow: Arc::new(flow),
            },
        );
    }

    /// Gives a place back when the flow could not be started (the start still counts against
    /// the user's rate).
    pub fn cancel(&mut self, reservation: Reservation) {
        let Reservation(()) = reservation;
        self.reserved = self.reserved.saturating_sub(1);
    }

    /// The flow `id` of `user`; another user's flow is as unknown as a missing one.
    pub fn get(&mut self, id: &str, user: &[u8], now: Instant) -> Result<Arc<F>, TableError> {
        self.purge(now);
        match self.flows.get(id) {
            Some(slot) if slot.user == user => Ok(slot.flow.clone()),
            _ => Err(TableError::Unknown),
        }
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn limits(per_minute: u32, max_flows: usize) -> Limits {
        Limits {
            flows_per_user_per_minute: per_minute,
            max_flows,
            flow_lifetime: Duration::from_secs(600),
            ..Limits::default()
        }
    }

    #[test]
    fn rate_per_user_per_minute() {
        let mut table = FlowTable::<()>::new(limits(2, 100));
        let t0 = Instant::now();
        for i in 0..2 {
            let r = table.admit(b"alice", t0).unwrap();
            table.insert(r, format!("f{i}"), b"alice".to_vec(), (), t0);
        }
        assert_eq!(table.admit(b"alice", t0).err(), Some(TableError::UserRate));
        // Another user is not affected; the same user is again after a minute.
        let r = table.admit(b"bob", t0).unwrap();
        table.cancel(r);
        let r = table.admit(b"alice", t0 + RATE_WINDOW).unwrap();
        table.cancel(r);
    }

    #[test]
    fn bounded_and_expiring() {
        let mut table = FlowTable::<()>::new(limits(10, 2));
        let t0 = Instant::now();
        let r1 = table.admit(b"a", t0).unwrap();
        let r2 = table.admit(b"b", t0).unwrap();
        // Reservations count: a third start is refused while two are being ordered.
        assert_eq!(table.admit(b"c", t0).err(), Some(TableError::Full));
        table.insert(r1, "1".into(), b"a".to_vec(), (), t0);
        table.cancel(r2);
        assert!(table.get("1", b"a", t0).is_ok());
        assert_eq!(table.get("1", b"b", t0).err(), Some(TableError::Unknown));
        assert_eq!(table.get("2", b"a", t0).err(), Some(TableError::Unknown));
        let later = t0 + Duration::from_secs(600);
        assert_eq!(table.get("1", b"a", later).err(), Some(TableError::Unknown));
        assert!(table.is_empty());
    }
}
