//! The customers and their commits in the bridge's SQLite store. Commits are time series: every
//! commit is a row with its receive time, never an update, so usage can be read over time; the
//! lists answer each user's and group's latest row. Rows are bounded by age and by count
//! ([`Retention`]), pruned in the transaction that adds them. The tables are created by
//! `Store::open` (`storage::CUSTOMER_SCHEMA`).

use rusqlite::{OptionalExtension, params};

use super::{Customer, GroupCommit, Received, ServerCommit, UserCommit};
use crate::storage::{Store, StoreError};

const COMMIT_TABLES: [&str; 3] = [
    "customer_server_commits",
    "customer_user_commits",
    "customer_group_commits",
];

/// How long commits are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days (0 = no limit by age).
    pub days: u32,
    /// Rows per commit table.
    pub max_rows: u32,
}

/// The digests of a customer's two secrets.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Of the commit token (`X-Commit-Token`).
    pub commit: String,
    /// Of the info key (`X-Info-Key`).
    pub info: String,
}

const CUSTOMER_COLUMNS: &str = "id, code, name, mac, tcphost, tcpport, webhost, webport, filehost,
    fileport, timeout, contact, ctel, server, created_ms";

fn customer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Customer> {
    Ok(Customer {
        id: r.get(0)?,
        code: r.get(1)?,
        name: r.get(2)?,
        mac: r.get(3)?,
        tcphost: r.get(4)?,
        tcpport: r.get(5)?,
        webhost: r.get(6)?,
        webport: r.get(7)?,
        filehost: r.get(8)?,
        fileport: r.get(9)?,
        timeout: r.get(10)?,
        contact: r.get(11)?,
        ctel: r.get(12)?,
        server: r.get(13)?,
        created_ms: r.get(14)?,
    })
}

fn conflict(e: rusqlite::Error, what: String) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(what)
        }
        other => other.into(),
    }
}

/// Deletes what `keep` no longer allows from every commit table.
fn prune(tx: &rusqlite::Connection, keep: Retention, now_ms: i64) -> rusqlite::Result<()> {
    for table in COMMIT_TABLES {
        if keep.days > 0 {
            let cutoff = now_ms - i64::from(keep.days) * 86_400_000;
            tx.execute(
                &format!("DELETE FROM {table} WHERE received_ms < ?1"),
                params![cutoff],
            )?;
        }
        // Ids only grow, so the newest `max_rows` are the highest ids.
        tx.execute(
            &format!("DELETE FROM {table} WHERE id <= (SELECT MAX(id) FROM {table}) - ?1"),
            params![i64::from(keep.max_rows)],
        )?;
    }
    Ok(())
}

/// [`Store::insert_customer`] on `conn`.
pub(crate) fn insert_customer_on(
    conn: &rusqlite::Connection,
    c: &Customer,
    secrets: &Secrets,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO customers (id, code, name, mac, tcphost, tcpport, webhost, webport,
             filehost, fileport, timeout, contact, ctel, server, created_ms,
             commit_digest, info_digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            c.id,
            c.code,
            c.name,
            c.mac,
            c.tcphost,
            c.tcpport,
            c.webhost,
            c.webport,
            c.filehost,
            c.fileport,
            c.timeout,
            c.contact,
            c.ctel,
            c.server,
            c.created_ms,
            secrets.commit,
            secrets.info
        ],
    )
    .map_err(|e| conflict(e, format!("customer code {:?}", c.code)))?;
    Ok(())
}

/// [`Store::remove_customer`] on `conn`, inside the caller's transaction.
pub(crate) fn remove_customer_on(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Option<Customer>, StoreError> {
    let found = conn
        .query_row(
            &format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = ?1"),
            params![id],
            customer_row,
        )
        .optional()?;
    if let Some(c) = &found {
        conn.execute("DELETE FROM customers WHERE id = ?1", params![id])?;
        for table in COMMIT_TABLES {
            conn.execute(
                &format!("DELETE FROM {table} WHERE code = ?1"),
                params![c.code],
            )?;
        }
    }
    Ok(found)
}

/// Keeps `commits` received at `now_ms` on `conn`, inside the caller's transaction, then prunes
/// by `keep`.
pub(crate) fn insert_commits_on(
    conn: &rusqlite::Connection,
    commits: &super::Commits,
    now_ms: i64,
    keep: Retention,
) -> Result<(), StoreError> {
    use super::Commits;
    match commits {
        Commits::Server(c) => insert_rows(
            conn,
            SERVER_SQL,
            std::slice::from_ref(c),
            now_ms,
            bind_server,
        )?,
        Commits::Users(rows) => insert_rows(conn, USER_SQL, rows, now_ms, bind_user)?,
        Commits::Groups(rows) => insert_rows(conn, GROUP_SQL, rows, now_ms, bind_group)?,
    }
    prune(conn, keep, now_ms)?;
    Ok(())
}

const SERVER_SQL: &str = "INSERT INTO customer_server_commits (received_ms, code, name, mac, ip,
    timeout, count, updatetimes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const USER_SQL: &str = "INSERT INTO customer_user_commits (received_ms, code, uuid, nickname,
    onlinetime, andtimes, pctimes, iostimes, fmsgs, tmsgs)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const GROUP_SQL: &str = "INSERT INTO customer_group_commits (received_ms, code, gid, name,
    createrid, creatername, ucount, msgcount, ctime, fcount, ncount)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

type Bind<T> = fn(&mut rusqlite::Statement<'_>, i64, &T) -> rusqlite::Result<usize>;

fn bind_server(
    st: &mut rusqlite::Statement<'_>,
    t: i64,
    c: &ServerCommit,
) -> rusqlite::Result<usize> {
    st.execute(params![
        t,
        c.code,
        c.name,
        c.mac,
        c.ip,
        c.timeout,
        c.count,
        c.updatetimes
    ])
}

fn bind_user(st: &mut rusqlite::Statement<'_>, t: i64, u: &UserCommit) -> rusqlite::Result<usize> {
    st.execute(params![
        t,
        u.code,
        u.uuid,
        u.nickname,
        u.onlinetime,
        u.andtimes,
        u.pctimes,
        u.iostimes,
        u.fmsgs,
        u.tmsgs
    ])
}

fn bind_group(
    st: &mut rusqlite::Statement<'_>,
    t: i64,
    g: &GroupCommit,
) -> rusqlite::Result<usize> {
    st.execute(params![
        t,
        g.code,
        g.gid,
        g.name,
        g.createrid,
        g.creatername,
        g.ucount,
        g.msgcount,
        g.ctime,
        g.fcount,
        g.ncount
    ])
}

/// Inserts `rows` with `sql` (`bind` gives each row's parameters after the receive time `?1`).
fn insert_rows<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    rows: &[T],
    now_ms: i64,
    bind: Bind<T>,
) -> rusqlite::Result<()> {
    let mut st = conn.prepare(sql)?;
    for row in rows {
        bind(&mut st, now_ms, row)?;
    }
    Ok(())
}

impl Store {
    /// Adds a customer with the digests of its secrets; a taken code is a conflict.
    pub fn insert_customer(&self, c: &Customer, secrets: &Secrets) -> Result<(), StoreError> {
        insert_customer_on(&self.conn(), c, secrets)
    }

    /// Every customer, by code.
    pub fn customers(&self) -> Result<Vec<Customer>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers ORDER BY code"
        ))?;
        let rows = st
            .query_map([], customer_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The customer with this code, and the digests of its secrets.
    pub fn customer(&self, code: &str) -> Result<Option<(Customer, Secrets)>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {CUSTOMER_COLUMNS}, commit_digest, info_digest FROM customers WHERE code = ?1"),
                params![code],
                |r| {
                    Ok((
                        customer_row(r)?,
                        Secrets {
                            commit: r.get(15)?,
                            info: r.get(16)?,
                        },
                    ))
                },
            )
            .optional()?)
    }

    /// Removes the customer with this id and all its commits; returns it, or `None`.
    pub fn remove_customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let found = remove_customer_on(&tx, id)?;
        tx.commit()?;
        Ok(found)
    }

    /// Runs `insert` and prunes by `keep`, in one transaction.
    fn insert_pruned(
        &self,
        now_ms: i64,
        keep: Retention,
        insert: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<()>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert(&tx)?;
        prune(&tx, keep, now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Keeps a server commit received at `now_ms`, then prunes by `keep`.
    pub fn insert_server_commit(
        &self,
        c: &ServerCommit,
        now_ms: i64,
        keep: Retention,
    ) -> Result<(), StoreError> {
        self.insert_pruned(now_ms, keep, |tx| {
            insert_rows(tx, SERVER_SQL, std::slice::from_ref(c), now_ms, bind_server)
        })
    }

    /// Keeps a user commit's entries (one transaction), then prunes by `keep`.
    pub fn insert_user_commits(
        &self,
        users: &[UserCommit],
        now_ms: i64,
        keep: Retention,
    ) -> Result<(), StoreError> {
        self.insert_pruned(now_ms, keep, |tx| {
            insert_rows(tx, USER_SQL, users, now_ms, bind_user)
        })
    }

    /// Keeps a group commit's entries (one transaction), then prunes by `keep`.
    pub fn insert_group_commits(
        &self,
        groups: &[GroupCommit],
        now_ms: i64,
        keep: Retention,
    ) -> Result<(), StoreError> {
        self.insert_pruned(now_ms, keep, |tx| {
            insert_rows(tx, GROUP_SQL, groups, now_ms, bind_group)
        })
    }

    /// Rows of `sql` (with the customer's code as `?1`), read by `row`.
    fn rows_of<T>(
        &self,
        sql: &str,
        code: &str,
        row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(sql)?;
        let rows = st
            .query_map(params![code], row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// A customer's latest server commit.
    pub fn latest_server_commit(
        &self,
        code: &str,
    ) -> Result<Option<Received<ServerCommit>>, StoreError> {
        let mut rows = self.rows_of(
            "SELECT received_ms, code, name, mac, ip, timeout, count, updatetimes
             FROM customer_server_commits WHERE code = ?1 ORDER BY id DESC LIMIT 1",
            code,
            |r| {
                Ok(Received {
                    received_ms: r.get(0)?,
                    commit: ServerCommit {
                        code: r.get(1)?,
                        name: r.get(2)?,
                        mac: r.get(3)?,
                        ip: r.get(4)?,
                        timeout: r.get(5)?,
                        count: r.get(6)?,
                        updatetimes: r.get(7)?,
                    },
                })
            },
        )?;
        Ok(rows.pop())
    }

    /// Each user's latest commit for a customer, by uuid.
    pub fn latest_users(&self, code: &str) -> Result<Vec<Received<UserCommit>>, StoreError> {
        self.rows_of(
            "SELECT received_ms, code, uuid, nickname, onlinetime, andtimes, pctimes, iostimes,
                    fmsgs, tmsgs
             FROM customer_user_commits WHERE id IN
                 (SELECT MAX(id) FROM customer_user_commits WHERE code = ?1 GROUP BY uuid)
             ORDER BY uuid",
            code,
            |r| {
                Ok(Received {
                    received_ms: r.get(0)?,
                    commit: UserCommit {
                        code: r.get(1)?,
                        uuid: r.get(2)?,
                        nickname: r.get(3)?,
                        onlinetime: r.get(4)?,
                        andtimes: r.get(5)?,
                        pctimes: r.get(6)?,
                        iostimes: r.get(7)?,
                        fmsgs: r.get(8)?,
                        tmsgs: r.get(9)?,
                    },
                })
            },
        )
    }

    /// Each group's latest commit for a customer, by gid.
    pub fn latest_groups(&self, code: &str) -> Result<Vec<Received<GroupCommit>>, StoreError> {
        self.rows_of(
            "SELECT received_ms, code, gid, name, createrid, creatername, ucount, msgcount, ctime,
                    fcount, ncount
             FROM customer_group_commits WHERE id IN
                 (SELECT MAX(id) FROM customer_group_commits WHERE code = ?1 GROUP BY gid)
             ORDER BY gid",
            code,
            |r| {
                Ok(Received {
                    received_ms: r.get(0)?,
                    commit: GroupCommit {
                        code: r.get(1)?,
                        gid: r.get(2)?,
                        name: r.get(3)?,
                        createrid: r.get(4)?,
                        creatername: r.get(5)?,
                        ucount: r.get(6)?,
                        msgcount: r.get(7)?,
                        ctime: r.get(8)?,
                        fcount: r.get(9)?,
                        ncount: r.get(10)?,
                    },
                })
            },
        )
    }

    /// Rows in each commit table (server, user, group) for a customer: what a test or the page
    /// can check was stored, or not.
    pub fn commit_rows(&self, code: &str) -> Result<[i64; 3], StoreError> {
        let conn = self.conn();
        let mut out = [0; 3];
        for (n, table) in out.iter_mut().zip(COMMIT_TABLES) {
            *n = conn.query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE code = ?1"),
                params![code],
                |r| r.get(0),
            )?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(code: &str) -> Customer {
        Customer {
            id: crate::customers::params::new_uuid(),
            code: code.into(),
            name: "n".into(),
            mac: String::new(),
            tcphost: "61.155.85.77".into(),
            tcpport: 10003,
            webhost: String::new(),
            webport: 0,
            filehost: String::new(),
            fileport: 0,
            timeout: String::new(),
            contact: String::new(),
            ctel: String::new(),
            server: String::new(),
            created_ms: 1,
        }
    }

    fn secrets() -> Secrets {
        Secrets {
            commit: "c".into(),
            info: "i".into(),
        }
    }

    fn user(code: &str, uuid: &str, fmsgs: i64) -> UserCommit {
        UserCommit {
            code: code.into(),
            uuid: uuid.into(),
            nickname: uuid.into(),
            onlinetime: 0,
            andtimes: 0,
            pctimes: 0,
            iostimes: 0,
            fmsgs,
            tmsgs: 0,
        }
    }

    const KEEP: Retention = Retention {
        days: 1,
        max_rows: 5,
    };

    #[test]
    fn codes_are_unique_and_removal_takes_the_commits() {
        let s = Store::open(None).unwrap();
        let a = customer("0513001");
        s.insert_customer(&a, &secrets()).unwrap();
        assert!(matches!(
            s.insert_customer(&customer("0513001"), &secrets()),
            Err(StoreError::Conflict(_))
        ));
        s.insert_user_commits(&[user("0513001", "u1", 1)], 10, KEEP)
            .unwrap();
        assert_eq!(s.commit_rows("0513001").unwrap(), [0, 1, 0]);
        assert_eq!(s.remove_customer(&a.id).unwrap(), Some(a));
        assert_eq!(s.commit_rows("0513001").unwrap(), [0, 0, 0]);
        assert!(s.customers().unwrap().is_empty());
    }

    /// Invariant: a commit only ever adds rows (a time series), the lists read each user's
    /// latest row, and the tables never hold more than `max_rows` nor rows older than `days`.
    #[test]
    fn commits_are_a_bounded_time_series_read_latest_first() {
        let s = Store::open(None).unwrap();
        let day = 86_400_000;
        s.insert_user_commits(&[user("c", "old", 1)], 0, KEEP)
            .unwrap();
        s.insert_user_commits(&[user("c", "u1", 1), user("c", "u2", 5)], 2 * day, KEEP)
            .unwrap();
        // The day-old row went by age.
        let latest = s.latest_users("c").unwrap();
        assert_eq!(
            latest
                .iter()
                .map(|u| u.commit.uuid.as_str())
                .collect::<Vec<_>>(),
            ["u1", "u2"]
        );
        s.insert_user_commits(&[user("c", "u1", 7)], 2 * day + 1, KEEP)
            .unwrap();
        let latest = s.latest_users("c").unwrap();
        assert_eq!(
            (latest[0].commit.fmsgs, latest[0].received_ms),
            (7, 2 * day + 1)
        );
        assert_eq!(s.commit_rows("c").unwrap()[1], 3, "every commit is a row");
        for i in 0..10 {
            s.insert_user_commits(&[user("c", "u3", i)], 2 * day + 2 + i, KEEP)
                .unwrap();
        }
        assert_eq!(s.commit_rows("c").unwrap()[1], 5, "at most max_rows");
        assert_eq!(s.latest_users("c").unwrap().last().unwrap().commit.fmsgs, 9);
    }
}
