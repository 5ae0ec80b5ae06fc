//! The SQLite store: one file, WAL journal, `synchronous=FULL` (an acknowledged change survives
//! a power cut).
//!
//! Writes go to one database thread that owns the write connection and commits in groups:
//! it takes every change waiting in its queue (yielding its core up to `GROUP_YIELDS` times
//! while the queue is empty, so that more can join), runs each in its own savepoint (a
//! failing change rolls back alone) and commits them with one fsync, answering each caller
//! only after that commit. Reads run concurrently on a small pool of read connections (WAL readers never block
//! the writer). Every statement is prepared once per connection and cached. Consumed nonces
//! are kept in memory (see [`Store`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use localcert_proto::origin::Origin;
use rusqlite::Connection;

use super::sqlite_ops as ops;
use super::sqlite_rows::{SCHEMA, audit_in};
use super::{
    Account, AccountStatus, Attested, AuditEntry, Authorization, CertRecord, Change, Changed, Done,
    IssueOutcome, KeyChange, Order, OrderStatus, RelyingParty, RevocationSummary, Store,
};
use crate::error::Error;
use crate::nonce::{NonceId, ReplayWindow};

/// Most changes committed together (bounds a group's latency and its transaction's size).
const MAX_GROUP: usize = 256;
/// Times the database thread yields its core when its queue is empty before it commits, so
/// that requests on the other threads can add their changes to the group (fewer, larger
/// commits: each costs an fsync and writes its pages to the WAL). Idle cores make a yield
/// return at once.
const GROUP_YIELDS: u32 = 2;
/// Read connections open at once; more concurrent readers wait for one.
const MAX_READERS: usize = 8;
/// Prepared statements cached per connection (more than the store has).
const STATEMENT_CACHE: usize = 64;

/// Called once the group commit is over, with its error if it failed.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A change: runs in its savepoint (or learns that no transaction could begin) and says
/// whether to keep its work.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;

/// How the SQLite store batches and prepares its work. The defaults are what production uses;
/// the bench turns each off to measure what it is worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteTuning {
    /// Most changes committed together (1: each change commits, and fsyncs, alone).
    pub max_group: usize,
    /// Prepared statements cached per connection (0: every statement is compiled again).
    pub statement_cache: usize,
    /// Also write each change's audit entry in a transaction of its own (what recording it
    /// apart from its change costs; off in production).
    pub audit_apart: bool,
    /// Also record each consumed nonce durably, in a write of its own (what keeping nonces in
    /// the store costs; off in production, where they are kept in memory).
    pub durable_nonces: bool,
    /// Wait for the writer and for a free reader with the async worker handed off, so that
    /// requests may run on the async workers (see [`Store::callable_from_async_workers`]);
    /// off: the server runs every request on a blocking thread, two more thread hops each.
    pub on_async_workers: bool,
    /// Take the changes submitted whole ([`Store::submit`]) without waiting: their callers
    /// await the commit on the async workers instead of holding a blocking thread (needs
    /// `on_async_workers`); off: they wait on a blocking thread like every other change.
    pub submit_without_waiting: bool,
    /// Times the database thread yields its core before it commits a group (0: it commits as
    /// soon as its queue is empty).
    pub group_yields: u32,
}

impl Default for SqliteTuning {
    fn default() -> Self {
        Self {
            max_group: MAX_GROUP,
            statement_cache: STATEMENT_CACHE,
            audit_apart: false,
            durable_nonces: false,
            on_async_workers: true,
            submit_without_waiting: true,
            group_yields: GROUP_YIELDS,
        }
    }
}

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    /// None for an in-memory database: reads then go through the writer.
    readers: Option<Readers>,
    nonces: ReplayWindow,
    tuning: SqliteTuning,
}

/// The read connections: the idle ones, how many are open, and how many callers wait for one
/// (a connection given back wakes one only if some wait: a wake-up is a system call).
#[derive(Debug, Default)]
struct Pool {
    idle: Vec<Connection>,
    open: usize,
    waiting: usize,
}

#[derive(Debug)]
struct Readers {
    statement_cache: usize,
    path: PathBuf,
    idle: Mutex<Pool>,
    freed: Condvar,
}

fn configure(conn: &Connection, statement_cache: usize) -> Result<(), Error> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(statement_cache);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -16_384)?;
    Ok(())
}

impl SqliteStore {
    /// Opens (and creates, mode 0600) the database file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::open_with(path, SqliteTuning::default())
    }

    /// [`Self::open`] with other batching and statement caching.
    pub fn open_with(path: &Path, tuning: SqliteTuning) -> Result<Self, Error> {
        if !path.exists() {
            // Create it owner-only before SQLite does: it holds EAB keys.
            crate::ca::write_private_file(path, b"")?;
        }
        let readers = Readers {
            statement_cache: tuning.statement_cache,
            path: path.to_owned(),
            idle: Mutex::new(Pool::default()),
            freed: Condvar::new(),
        };
        Self::start(Connection::open(path)?, Some(readers), tuning)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Self, Error> {
        Self::start(Connection::open_in_memory()?, None, SqliteTuning::default())
    }

    fn start(
        conn: Connection,
        readers: Option<Readers>,
        tuning: SqliteTuning,
    ) -> Result<Self, Error> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        configure(&conn, tuning.statement_cache)?;
        conn.execute_batch(SCHEMA)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (max_group, yields) = (tuning.max_group.max(1), tuning.group_yields);
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(&conn, &queue, max_group, yields))
            .map_err(|e| Error::Store(format!("cannot start the database thread: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            writer: Some(writer),
            readers,
            nonces: ReplayWindow::default(),
            tuning,
        })
    }

    /// Runs `change` on the database thread in the next group commit; its result once durable.
    fn write<R: Send + 'static>(
        &self,
        change: impl FnOnce(&Connection) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let (reply, answer) = mpsc::sync_channel::<Result<R, Error>>(1);
        write_then(self.jobs.as_ref(), change, move |outcome| {
            let _ = reply.send(outcome);
        });
        super::wait_off_worker(|| answer.recv())
            .map_err(|_| Error::Store("the database thread has stopped".into()))?
    }

    /// [`Self::change`] without waiting: `done` gets its result on the database thread once
    /// durable (with the audit entry apart, once that too is).
    fn change_then<R: Send + 'static>(
        &self,
        audit: AuditEntry,
        change: impl FnOnce(&Connection, &AuditEntry) -> Result<R, Error> + Send + 'static,
        done: impl FnOnce(Result<R, Error>) + Send + 'static,
    ) {
        let apart = self
            .tuning
            .audit_apart
            .then(|| (audit.clone(), self.jobs.clone()));
        write_then(
            self.jobs.as_ref(),
            move |c| change(c, &audit),
            move |outcome| match (outcome, apart) {
                (Ok(result), Some((audit, jobs))) => write_then(
                    jobs.as_ref(),
                    move |c| Ok(audit_in(c, &audit)?),
                    move |written| done(written.map(|()| result)),
                ),
                (outcome, _) => done(outcome),
            },
        );
    }

    /// A change that carries its audit entry, in one write (see [`SqliteTuning::audit_apart`]).
    fn change<R: Send + 'static>(
        &self,
        audit: AuditEntry,
        change: impl FnOnce(&Connection, &AuditEntry) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let apart = self.tuning.audit_apart.then(|| audit.clone());
        let result = self.write(move |c| change(c, &audit))?;
        if let Some(audit) = apart {
            self.audit(&audit)?;
        }
        Ok(result)
    }

    /// Runs `query` on a read connection (on the database thread for an in-memory database).
    fn read<R: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, Error> {
        let Some(readers) = &self.readers else {
            return self.write(move |conn| Ok(query(conn)?));
        };
        let conn = readers.take()?;
        let result = query(&conn);
        readers.give_back(conn);
        Ok(result?)
    }
}

impl Readers {
    fn take(&self) -> Result<Connection, Error> {
        let poisoned = |_| Error::Store("reader pool lock poisoned".into());
        let mut pool = self.idle.lock().map_err(poisoned)?;
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(conn);
            }
            if pool.open < MAX_READERS {
                pool.open += 1;
                drop(pool);
                let opened = Connection::open(&self.path)
                    .map_err(Error::from)
                    .and_then(|conn| {
                        configure(&conn, self.statement_cache)?;
                        conn.pragma_update(None, "query_only", "ON")?;
                        Ok(conn)
                    });
                if opened.is_err() {
                    if let Ok(mut pool) = self.idle.lock() {
                        pool.open -= 1;
                        // A waiter may open one in its place.
                        if pool.waiting > 0 {
                            self.freed.notify_one();
                        }
                    }
                }
                return opened;
            }
            pool.waiting += 1;
            let woken = super::wait_off_worker(|| self.freed.wait(pool));
            pool = woken.map_err(poisoned)?;
            pool.waiting -= 1;
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut pool) = self.idle.lock() {
            pool.idle.push(conn);
            if pool.waiting > 0 {
                self.freed.notify_one();
            }
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue ends the database thread after the changes already queued.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Queues `change` for the database thread's next group commit; `done` gets its result there
/// once durable. If the thread has stopped, `done` is dropped uncalled (a waiting caller sees
/// its channel close).
fn write_then<R: Send + 'static>(
    jobs: Option<&mpsc::Sender<Job>>,
    change: impl FnOnce(&Connection) -> Result<R, Error> + Send + 'static,
    done: impl FnOnce(Result<R, Error>) + Send + 'static,
) {
    let job: Job = Box::new(move |conn| {
        let outcome = match conn {
            Some(conn) => change(conn),
            None => Err(Error::Store("cannot begin a transaction".into())),
        };
        let keep = outcome.is_ok();
        let finish: Finish = Box::new(move |committed| {
            done(match committed {
                Ok(()) => outcome,
                Err(error) => Err(Error::Store(format!("commit failed: {error}"))),
            });
        });
        (keep, finish)
    });
    if let Some(jobs) = jobs {
        let _ = jobs.send(job);
    }
}

/// Runs a transaction-control statement, compiled once per connection like the others
/// (`execute_batch` would compile it again every time: several per change).
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The database thread: group commits until the queue closes.
fn write_loop(conn: &Connection, queue: &mpsc::Receiver<Job>, max_group: usize, yields: u32) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        let mut left = yields;
        while group.len() < max_group {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) if left > 0 => {
                    left -= 1;
                    std::thread::yield_now();
                }
                Err(_) => break,
            }
        }
        if let Err(error) = control(conn, "BEGIN IMMEDIATE") {
            let error = error.to_string();
            for job in group {
                let (_, finish) = job(None);
                finish(Err(error.clone()));
            }
            continue;
        }
        let mut finishes = Vec::with_capacity(group.len());
        for job in group {
            let savepoint = control(conn, "SAVEPOINT change");
            let (keep, finish) = job(savepoint.as_ref().ok().map(|()| conn));
            if savepoint.is_ok() {
                let rollback = if keep {
                    Ok(())
                } else {
                    control(conn, "ROLLBACK TO change")
                };
                if let Err(error) = rollback.and_then(|()| control(conn, "RELEASE change")) {
                    tracing::error!(%error, "savepoint");
                }
            }
            finishes.push(finish);
        }
        let committed = control(conn, "COMMIT").map_err(|e| {
            let _ = control(conn, "ROLLBACK");
            e.to_string()
        });
        for finish in finishes {
            finish(committed.clone());
        }
    }
}

impl Store for SqliteStore {
    fn add_relying_party(&self, rp: &RelyingParty) -> Result<(), Error> {
        let rp = rp.clone();
        self.write(move |c| ops::add_relying_party(c, &rp))
    }

    fn relying_parties(&self) -> Result<Vec<RelyingParty>, Error> {
        self.read(ops::relying_parties)
    }

    fn relying_party_by_kid(&self, kid: &str) -> Result<Option<RelyingParty>, Error> {
        let kid = kid.to_owned();
        self.read(move |c| ops::relying_party_by_kid(c, &kid))
    }

    fn revoke_relying_party(
        &self,
        origin: &Origin,
        now: SystemTime,
    ) -> Result<Option<RevocationSummary>, Error> {
        let origin = origin.clone();
        self.write(move |c| ops::revoke_relying_party(c, &origin, now))
    }

    fn consume_nonce(&self, nonce: &NonceId, now: SystemTime) -> Result<bool, Error> {
        let first = self.nonces.consume(nonce, now)?;
        if first && self.tuning.durable_nonces {
            let (id, expires) = (nonce.id.to_vec(), nonce.expires);
            self.write(move |c| Ok(ops::record_nonce(c, &id, expires)?))?;
        }
        Ok(first)
    }

    fn create_account(&self, account: &Account, audit: &AuditEntry) -> Result<(), Error> {
        let (account, audit) = (account.clone(), audit.clone());
        self.change(audit, move |c, audit| {
            ops::create_account(c, &account, audit)
        })
    }

    fn account(&self, id: &str) -> Result<Option<Account>, Error> {
        let id = id.to_owned();
        self.read(move |c| ops::account(c, "a.id", &id))
    }

    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, Error> {
        let thumbprint = thumbprint.to_owned();
        self.read(move |c| ops::account(c, "a.thumbprint", &thumbprint))
    }

    fn change_account_key(
        &self,
        id: &str,
        old_thumbprint: &str,
        jwk: &str,
        thumbprint: &str,
        audit: &AuditEntry,
    ) -> Result<KeyChange, Error> {
        let (id, old, audit) = (id.to_owned(), old_thumbprint.to_owned(), audit.clone());
        let (jwk, thumbprint) = (jwk.to_owned(), thumbprint.to_owned());
        self.change(audit, move |c, audit| {
            ops::change_account_key(c, &id, &old, &jwk, &thumbprint, audit)
        })
    }

    fn set_account_status(
        &self,
        id: &str,
        status: AccountStatus,
        audit: &AuditEntry,
    ) -> Result<(), Error> {
        let (id, audit) = (id.to_owned(), audit.clone());
        self.change(audit, move |c, audit| {
            ops::set_account_status(c, &id, status, audit)
        })
    }

    fn create_order(
        &self,
        order: &Order,
        authorizations: &[Authorization],
        audit: &AuditEntry,
    ) -> Result<(), Error> {
        let (order, authorizations, audit) =
            (order.clone(), authorizations.to_vec(), audit.clone());
        self.change(audit, move |c, audit| {
            ops::create_order(c, &order, &authorizations, audit)
        })
    }

    fn order(&self, id: &str) -> Result<Option<Order>, Error> {
        let id = id.to_owned();
        self.read(move |c| ops::order(c, &id))
    }

    fn order_ids(&self, account_id: &str) -> Result<Vec<String>, Error> {
        let account_id = account_id.to_owned();
        self.read(move |c| ops::order_ids(c, &account_id))
    }

    fn authorizations(&self, order_id: &str) -> Result<Vec<Authorization>, Error> {
        let order_id = order_id.to_owned();
        self.read(move |c| ops::authorizations(c, &order_id))
    }

    fn authorization(&self, id: &str) -> Result<Option<Authorization>, Error> {
        let id = id.to_owned();
        self.read(move |c| ops::authorization(c, &id))
    }

    fn record_attestation(
        &self,
        authz_id: &str,
        attested: &Attested,
        audit: &AuditEntry,
    ) -> Result<bool, Error> {
        let (authz_id, attested, audit) = (authz_id.to_owned(), attested.clone(), audit.clone());
        self.change(audit, move |c, audit| {
            ops::record_attestation(c, &authz_id, &attested, audit)
        })
    }

    fn cancel_order_audited(&self, id: &str, audit: &AuditEntry) -> Result<(), Error> {
        let (id, audit) = (id.to_owned(), audit.clone());
        self.change(audit, move |c, audit| ops::cancel_order(c, &id, audit))
    }

    fn star_orders_due(&self, now: SystemTime) -> Result<Vec<Order>, Error> {
        self.read(move |c| ops::star_orders_due(c, now))
    }

    fn issue(
        &self,
        order_id: &str,
        expected: OrderStatus,
        replaces: Option<&str>,
        cert: &CertRecord,
        audit: &AuditEntry,
    ) -> Result<IssueOutcome, Error> {
        let (order_id, replaces) = (order_id.to_owned(), replaces.map(str::to_owned));
        let (cert, audit) = (cert.clone(), audit.clone());
        self.change(audit, move |c, audit| {
            ops::issue(c, &order_id, expected, replaces.as_deref(), cert, audit)
        })
    }

    fn certificate(&self, id: &str) -> Result<Option<CertRecord>, Error> {
        let id = id.to_owned();
        self.read(move |c| ops::certificate(c, "id", &id))
    }

    fn certificate_by_serial(&self, serial: &str) -> Result<Option<CertRecord>, Error> {
        let serial = serial.to_owned();
        self.read(move |c| ops::certificate(c, "serial", &serial))
    }

    fn revoke_certificate(
        &self,
        id: &str,
        reason: u8,
        now: SystemTime,
        audit: &AuditEntry,
    ) -> Result<bool, Error> {
        let (id, audit) = (id.to_owned(), audit.clone());
        self.change(audit, move |c, audit| {
            ops::revoke_certificate(c, &id, reason, now, audit)
        })
    }

    fn revoked_unexpired(&self, now: SystemTime) -> Result<Vec<CertRecord>, Error> {
        self.read(move |c| ops::revoked_unexpired(c, now))
    }

    fn audit(&self, entry: &AuditEntry) -> Result<(), Error> {
        let entry = entry.clone();
        self.write(move |c| Ok(audit_in(c, &entry)?))
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        self.read(move |c| ops::audit_log(c, limit))
    }

    fn prune_audit(&self, before: SystemTime, limit: usize) -> Result<usize, Error> {
        self.write(move |c| ops::prune_audit(c, before, limit))
    }

    fn callable_from_async_workers(&self) -> bool {
        self.tuning.on_async_workers
    }

    fn submit(&self, change: Change, done: Done) {
        match change {
            Change::CreateOrder {
                order,
                authorizations,
                audit,
            } => self.change_then(
                audit,
                move |c, audit| ops::create_order(c, &order, &authorizations, audit),
                move |r| done(r.map(|()| Changed::Created)),
            ),
            Change::RecordAttestation {
                authz_id,
                attested,
                audit,
            } => self.change_then(
                audit,
                move |c, audit| ops::record_attestation(c, &authz_id, &attested, audit),
                move |r| done(r.map(Changed::Recorded)),
            ),
            Change::Issue {
                order_id,
                expected,
                cert,
                audit,
            } => self.change_then(
                audit,
                move |c, audit| ops::issue(c, &order_id, expected, None, cert, audit),
                move |r| done(r.map(Changed::Issued)),
            ),
        }
    }

    fn submits_without_waiting(&self) -> bool {
        self.tuning.on_async_workers && self.tuning.submit_without_waiting
    }
}
