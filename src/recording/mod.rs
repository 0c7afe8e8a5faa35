//! Talk-burst recording: every burst a bridged side hears becomes one Ogg Opus file
//! (the talker's own packets, never re-encoded) plus a line in `index.jsonl` saying
//! who, where, when and how long.
//!
//! File IO runs on its own thread behind a bounded queue, so a slow disk can cost
//! recordings (counted) but never delays the audio path.
//!
//! With a store ([`Archive`]) every finished burst is also indexed in SQLite (the archive:
//! listed, searched, downloaded and deleted over `/v1/archive`, `src/http/archive.rs`), and
//! the retention (`[recording] retention_days`, `max_total_bytes`) runs on the same thread:
//! at start, after each burst and every minute. A full disk costs the burst being written
//! (its partial file is removed, `pttbridge_recording_disk_full_total` counts it, a warning
//! says so), never the process.
//!
//! The same thread writes meeting rooms' server recordings ([`mix`]): the room's tracks mixed
//! down into one file per recording; and the bursts a side transmits itself ([`transmission`]).

pub mod mix;
pub mod transmission;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use media::ogg_writer::{OggOpusHeader, OggOpusWriter};
use serde::{Deserialize, Serialize};
use tracing::warn;

use self::mix::{Mix, MixError, MixKey, MixStart};
use crate::hub::Party;
use crate::storage::{BurstRow, Store, StoreError};

/// How often the retention runs when no burst ends.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The archive: where finished bursts are indexed, and how long they are kept.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The index.
    pub store: Store,
    /// Delete bursts older than this many days (0 = never).
    pub retention_days: u32,
    /// Delete the oldest bursts while the files add up to more than this (0 = no limit).
    pub max_total_bytes: u64,
}

/// Whether `name` can be a file of the archive: a plain file name as the recorder makes them
/// (no directory part, no `..`, not hidden), so that joining it to the directory stays inside.
pub fn safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.ends_with(".opus")
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.contains("..")
}

/// Deletes a burst: its row, then its file (a file already gone is fine).
pub fn delete_burst(store: &Store, dir: &Path, id: i64) -> Result<Option<BurstRow>, StoreError> {
    let row = store.delete_burst(id)?;
    if let Some(r) = &row {
        remove_file(dir, &r.file);
        metrics::gauge!("pttbridge_recording_archive_bytes").decrement(r.size_bytes as f64);
    }
    Ok(row)
}

fn remove_file(dir: &Path, file: &str) {
    if !safe_file_name(file) {
        warn!(file = %logsafe::esc(file), "not deleting a file outside the archive");
        return;
    }
    match std::fs::remove_file(dir.join(file)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(file = %logsafe::esc(file), "cannot delete a recording: {e}"),
    }
}

/// Applies the retention at `now_ms`: bursts older than `retention_days` go, then the oldest
/// while the total is over `max_total_bytes`. Returns how many were deleted.
pub fn apply_retention(a: &Archive, dir: &Path, now_ms: i64) -> Result<usize, StoreError> {
    let mut deleted = 0;
    if a.retention_days > 0 {
        let cutoff = now_ms - i64::from(a.retention_days) * 86_400_000;
        'days: loop {
            let oldest = a.store.oldest_bursts(100)?;
            if oldest.is_empty() {
                break;
            }
            for b in oldest {
                if b.start_ms >= cutoff {
                    break 'days;
                }
                delete_burst(&a.store, dir, b.id)?;
                deleted += 1;
            }
        }
    }
    if a.max_total_bytes > 0 {
        let max = i64::try_from(a.max_total_bytes).unwrap_or(i64::MAX);
        let mut total = a.store.burst_bytes()?;
        'bytes: while total > max {
            let oldest = a.store.oldest_bursts(100)?;
            if oldest.is_empty() {
                break;
            }
            for b in oldest {
                if total <= max {
                    break 'bytes;
                }
                delete_burst(&a.store, dir, b.id)?;
                total -= b.size_bytes;
                deleted += 1;
            }
        }
    }
    if deleted > 0 {
        metrics::counter!("pttbridge_recording_archive_deleted_total").increment(deleted as u64);
        tracing::info!(deleted, "recording retention deleted the oldest bursts");
    }
    metrics::gauge!("pttbridge_recording_archive_bytes").set(a.store.burst_bytes()? as f64);
    Ok(deleted)
}

/// A new file `<stem>.opus` in `dir`, or `<stem>-2.opus`, ... when that name is taken (two
/// bursts of one talker can start within a millisecond): an existing recording is never
/// overwritten.
fn create_new(dir: &Path, stem: &str) -> std::io::Result<(String, File)> {
    let mut n = 1;
    loop {
        let name = if n == 1 {
            format!("{stem}.opus")
        } else {
            format!("{stem}-{n}.opus")
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(&name))
        {
            Ok(f) => return Ok((name, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Appends `entry` to `index.jsonl`; false (counted) when it could not be written.
fn append_index(dir: &Path, entry: &IndexEntry) -> bool {
    let line = serde_json::to_string(entry).unwrap_or_default();
    let index = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("index.jsonl"));
    match index.and_then(|mut f| writeln!(f, "{line}")) {
        Ok(()) => true,
        Err(e) => {
            count_write_error(&e, "index.jsonl");
            false
        }
    }
}

/// Longest `index.jsonl` line read back (a line is a few hundred bytes).
const MAX_INDEX_LINE: usize = 64 * 1024;

/// Indexes again what `index.jsonl` lists and the store does not know, where the file is still
/// there: an in-memory store (the default) starts empty at every start, and a store file may be
/// lost or replaced while the recordings stay. Unreadable lines are skipped and counted in the
/// log. Returns how many rows were added.
pub fn rebuild_index(a: &Archive, dir: &Path) -> usize {
    use std::io::BufRead;
    let Ok(file) = File::open(dir.join("index.jsonl")) else {
        return 0;
    };
    let (mut added, mut bad) = (0, 0);
    for line in std::io::BufReader::new(file).split(b'\n') {
        let Ok(line) = line else { break };
        let entry = (line.len() <= MAX_INDEX_LINE)
            .then(|| serde_json::from_slice::<IndexEntry>(&line).ok())
            .flatten();
        let Some(entry) = entry else {
            bad += 1;
            continue;
        };
        if !safe_file_name(&entry.file) {
            bad += 1;
            continue;
        }
        let Ok(meta) = std::fs::metadata(dir.join(&entry.file)) else {
            continue; // deleted since (retention, an operator): nothing to index
        };
        match a.store.burst_by_file(&entry.file) {
            Ok(None) => {
                if a.store.insert_burst(&burst_row(&entry, meta.len())).is_ok() {
                    added += 1;
                }
            }
            Ok(Some(_)) => {}
            Err(e) => {
                warn!("cannot rebuild the recording index: {e}");
                break;
            }
        }
    }
    if added > 0 || bad > 0 {
        tracing::info!(
            added,
            unreadable = bad,
            "recording index rebuilt from index.jsonl"
        );
    }
    added
}

/// Whether an IO error (as the media crate words it) means the disk is full.
fn disk_full(e: &dyn std::fmt::Display) -> bool {
    let s = e.to_string();
    s.contains("os error 28") || s.contains("No space left") || s.contains("os error 122")
}

fn count_write_error(e: &dyn std::fmt::Display, file: &str) {
    if disk_full(e) {
        metrics::counter!("pttbridge_recording_disk_full_total").increment(1);
        warn!(file = %logsafe::esc(file), "recording disk is full: this burst is not recorded ({e})");
    } else {
        warn!(file = %logsafe::esc(file), "cannot write a recording: {e}");
    }
    metrics::counter!("pttbridge_recording_errors_total").increment(1);
}

/// Commands queued before the recorder thread falls behind and drops them.
const QUEUE: usize = 4096;

/// Identifies one talker's burst: the source (side/account) and the talker's id there.
pub type BurstKey = (String, u32);

/// One line of `index.jsonl`: enough to index the file again (see [`rebuild_index`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexEntry {
    /// File name, relative to the recording directory.
    pub file: String,
    /// Tenant.
    pub app_id: String,
    /// Where the talk happened.
    pub group_id: String,
    /// Who talked.
    pub party: Party,
    /// Start, ms since the Unix epoch.
    pub start_ms: u64,
    /// Audio written, in ms.
    pub duration_ms: u64,
    /// Opus packets written.
    pub packets: u64,
    /// The channel or room's name, where the group id does not give it (a meeting room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

enum Cmd {
    Start {
        key: BurstKey,
        app_id: String,
        group_id: String,
        party: Party,
    },
    Packet {
        key: BurstKey,
        sequence: u64,
        opus: Bytes,
    },
    Stop {
        key: BurstKey,
    },
    StopSource {
        source: String,
    },
    MixStart(Box<MixStart>),
    MixPacket {
        key: MixKey,
        track: u64,
        ts: u32,
        payload: Bytes,
        at: Instant,
    },
    MixTick {
        key: MixKey,
        at: Instant,
    },
    MixStop {
        key: MixKey,
    },
}

/// Handle to the recorder thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: SyncSender<Cmd>,
}

impl Recorder {
    /// Starts the recorder thread writing into `dir` (created if missing), indexing into
    /// `archive` when given.
    pub fn start(dir: &Path, archive: Option<Archive>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = sync_channel(QUEUE);
        let dir = dir.to_owned();
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || Writer::new(dir, archive).run(rx))?;
        Ok(Self { tx })
    }

    fn send(&self, cmd: Cmd) {
        match self.tx.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("pttbridge_recording_dropped_total").increment(1)
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Starts a room's server recording; `start.reply` is told its id once the file and row
    /// exist (or at once, [`MixError::Busy`], when the recorder cannot take it).
    pub fn start_mix(&self, start: MixStart) {
        if let Err(
            TrySendError::Full(Cmd::MixStart(s)) | TrySendError::Disconnected(Cmd::MixStart(s)),
        ) = self.tx.try_send(Cmd::MixStart(Box::new(start)))
        {
            let _ = s.reply.send(Err(MixError::Busy));
        }
    }

    /// One packet of a recorded room's track (a member's publish, or the PTT channel's
    /// stream); `ts` in 48 kHz units of that track, `at` its arrival.
    pub fn mix_packet(&self, key: MixKey, track: u64, ts: u32, payload: Bytes, at: Instant) {
        self.send(Cmd::MixPacket {
            key,
            track,
            ts,
            payload,
            at,
        });
    }

    /// The room's 20 ms tick: the recording's next 20 ms is mixed and written.
    pub fn mix_tick(&self, key: MixKey, at: Instant) {
        self.send(Cmd::MixTick { key, at });
    }

    /// Stops a room's recording: the file is closed and its row completed. (A stop lost to a
    /// full queue is made up for: a recording whose room stopped ticking is closed after
    /// [`mix::STALE`].)
    pub fn stop_mix(&self, key: MixKey) {
        self.send(Cmd::MixStop { key });
    }

    /// A talker started: opens a file.
    pub fn start_burst(&self, key: BurstKey, app_id: &str, group_id: &str, party: Party) {
        self.send(Cmd::Start {
            key,
            app_id: app_id.to_owned(),
            group_id: group_id.to_owned(),
            party,
        });
    }

    /// One Opus packet of a burst; `sequence` in 10 ms units keeps gaps as gaps.
    pub fn packet(&self, key: BurstKey, sequence: u64, opus: Bytes) {
        self.send(Cmd::Packet {
            key,
            sequence,
            opus,
        });
    }

    /// The talker stopped: closes the file and indexes it.
    pub fn stop_burst(&self, key: BurstKey) {
        self.send(Cmd::Stop { key });
    }

    /// A source went away (connection lost): closes all its open bursts.
    pub fn stop_source(&self, source: &str) {
        self.send(Cmd::StopSource {
            source: source.to_owned(),
        });
    }
}

struct Burst {
    writer: OggOpusWriter<BufWriter<File>>,
    file: String,
    app_id: String,
    group_id: String,
    party: Party,
    start_ms: u64,
    next_seq: Option<u64>,
}

struct Writer {
    dir: PathBuf,
    open: HashMap<BurstKey, Burst>,
    mixes: HashMap<MixKey, Mix>,
    serial: u32,
    archive: Option<Archive>,
}

/// Wall-clock time, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Writer {
    fn new(dir: PathBuf, archive: Option<Archive>) -> Self {
        Self {
            dir,
            open: HashMap::new(),
            mixes: HashMap::new(),
            serial: 1,
            archive,
        }
    }

    fn retain(&self) {
        if let Some(a) = &self.archive
            && let Err(e) = apply_retention(a, &self.dir, now_ms() as i64)
        {
            warn!("recording retention failed: {e}");
        }
    }

    fn run(mut self, rx: Receiver<Cmd>) {
        if let Some(a) = &self.archive {
            rebuild_index(a, &self.dir);
        }
        self.retain();
        let mut last_retention = std::time::Instant::now();
        loop {
            // While rooms record, wake often enough to close one whose room went quiet.
            let wait = if self.mixes.is_empty() {
                RETENTION_EVERY
            } else {
                mix::STALE
            };
            let cmd = match rx.recv_timeout(wait) {
                Ok(cmd) => Some(cmd),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if last_retention.elapsed() >= RETENTION_EVERY {
                self.retain();
                last_retention = std::time::Instant::now();
            }
            if let Some(cmd) = cmd {
                self.handle(cmd);
            }
            self.close_stale_mixes();
        }
        let keys: Vec<BurstKey> = self.open.keys().cloned().collect();
        for k in keys {
            self.close(&k);
        }
        for (_, m) in self.mixes.drain() {
            m.finish(&self.dir, self.archive.as_ref());
        }
    }

    /// Closes recordings whose room stopped ticking (its stop was lost, or the room died).
    fn close_stale_mixes(&mut self) {
        let now = Instant::now();
        let stale: Vec<MixKey> = self
            .mixes
            .iter()
            .filter(|(_, m)| m.stale(now))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(m) = self.mixes.remove(&k) {
                warn!(room = k, "room recording closed: its room stopped ticking");
                m.finish(&self.dir, self.archive.as_ref());
            }
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Start {
                key,
                app_id,
                group_id,
                party,
            } => {
                self.close(&key);
                if let Err(e) = self.open(key, app_id, group_id, party) {
                    count_write_error(&e, "(new burst)");
                }
            }
            Cmd::Packet {
                key,
                sequence,
                opus,
            } => {
                if let Some(b) = self.open.get_mut(&key) {
                    // Keep real time across lost packets (sequence counts 10 ms units).
                    if let Some(expected) = b.next_seq
                        && sequence > expected
                        && sequence - expected < 500
                    {
                        let _ = b.writer.write_gap(((sequence - expected) * 480) as u32);
                    }
                    let frames =
                        media::opus_toc::parse(&opus).map_or(2, |i| u64::from(i.samples_48k) / 480);
                    b.next_seq = Some(sequence + frames.max(1));
                    if let Err(e) = b.writer.write_packet(&opus) {
                        // The burst is lost (a full disk, most likely): its partial file
                        // goes, the audio path never notices.
                        count_write_error(&e, &b.file);
                        if let Some(b) = self.open.remove(&key) {
                            let file = b.file.clone();
                            drop(b);
                            remove_file(&self.dir, &file);
                        }
                    }
                }
            }
            Cmd::Stop { key } => self.close(&key),
            Cmd::MixStart(start) => {
                if let Some(old) = self.mixes.remove(&start.key) {
                    old.finish(&self.dir, self.archive.as_ref());
                }
                self.serial = self.serial.wrapping_add(1);
                match Mix::open(&self.dir, self.archive.as_ref(), self.serial, &start) {
                    Ok(m) => {
                        let _ = start.reply.send(Ok(m.id()));
                        self.mixes.insert(start.key, m);
                    }
                    Err(e) => {
                        warn!(room = start.key, "room recording not started: {e}");
                        let _ = start.reply.send(Err(e));
                    }
                }
            }
            Cmd::MixPacket {
                key,
                track,
                ts,
                payload,
                at,
            } => {
                if let Some(m) = self.mixes.get_mut(&key) {
                    m.packet(track, ts, payload, at);
                }
            }
            Cmd::MixTick { key, at } => {
                if let Some(m) = self.mixes.get_mut(&key)
                    && let Err(e) = m.tick(at)
                    && let Some(m) = self.mixes.remove(&key)
                {
                    m.fail(&self.dir, self.archive.as_ref(), &e);
                }
            }
            Cmd::MixStop { key } => {
                if let Some(m) = self.mixes.remove(&key) {
                    m.finish(&self.dir, self.archive.as_ref());
                }
            }
            Cmd::StopSource { source } => {
                let keys: Vec<BurstKey> = self
                    .open
                    .keys()
                    .filter(|k| k.0 == source)
                    .cloned()
                    .collect();
                for k in keys {
                    self.close(&k);
                }
            }
        }
    }

    fn open(
        &mut self,
        key: BurstKey,
        app_id: String,
        group_id: String,
        party: Party,
    ) -> media::Result<()> {
        let start_ms = now_ms();
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let stem = format!("{start_ms}-{}-{}", safe(&key.0), safe(&party.name));
        let (file, out) = create_new(&self.dir, &stem)?;
        let out = BufWriter::new(out);
        let header = OggOpusHeader {
            comments: vec![
                format!("TITLE={} in {group_id}", party.name),
                format!("ARTIST={}", party.name),
                format!("GROUP={group_id}"),
                format!("APP={app_id}"),
                format!("START_MS={start_ms}"),
            ],
            ..OggOpusHeader::default()
        };
        self.serial = self.serial.wrapping_add(1);
        let writer = OggOpusWriter::new(out, self.serial, &header)?;
        self.open.insert(
            key,
            Burst {
                writer,
                file,
                app_id,
                group_id,
                party,
                start_ms,
                next_seq: None,
            },
        );
        Ok(())
    }

    fn close(&mut self, key: &BurstKey) {
        let Some(b) = self.open.remove(key) else {
            return;
        };
        let packets = b.writer.packets();
        let duration_ms = b.writer.samples() / 48;
        if let Err(e) = b.writer.finish() {
            count_write_error(&e, &b.file);
            remove_file(&self.dir, &b.file);
            return;
        }
        let size = std::fs::metadata(self.dir.join(&b.file)).map_or(0, |m| m.len());
        let entry = IndexEntry {
            file: b.file,
            app_id: b.app_id,
            group_id: b.group_id,
            party: b.party,
            start_ms: b.start_ms,
            duration_ms,
            packets,
            channel: None,
        };
        if let Some(a) = &self.archive {
            let row = burst_row(&entry, size);
            match a.store.insert_burst(&row) {
                Ok(_) => {
                    metrics::gauge!("pttbridge_recording_archive_bytes").increment(size as f64)
                }
                Err(e) => warn!("cannot index a recording: {e}"),
            }
        }
        if append_index(&self.dir, &entry) {
            metrics::counter!("pttbridge_recordings_total").increment(1);
        }
        if self.archive.as_ref().is_some_and(|a| a.max_total_bytes > 0) {
            self.retain();
        }
    }
}

/// The archive's row for an indexed burst: server and channel from the group
/// (`ptt:<server>:<channel>`; other sides' groups keep their name whole as the channel).
fn burst_row(e: &IndexEntry, size: u64) -> BurstRow {
    let mut parts = e.group_id.splitn(3, ':');
    let (server, mut channel) = match (parts.next(), parts.next(), parts.next()) {
        (Some("ptt"), Some(server), Some(channel)) => (server.to_owned(), channel.to_owned()),
        _ => (String::new(), e.group_id.clone()),
    };
    if let Some(c) = &e.channel {
        channel.clone_from(c);
    }
    BurstRow {
        id: 0,
        file: e.file.clone(),
        app_id: e.app_id.clone(),
        side: e.party.side.as_str().to_owned(),
        server,
        channel,
        group_id: e.group_id.clone(),
        talker: e.party.name.clone(),
        talker_id: e.party.id.clone(),
        start_ms: e.start_ms as i64,
        duration_ms: e.duration_ms as i64,
        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        codec: "opus".into(),
        packets: e.packets as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Side;

    fn row(file: &str, start_ms: i64, size: i64) -> BurstRow {
        BurstRow {
            id: 0,
            file: file.into(),
            app_id: "a".into(),
            side: "ptt".into(),
            server: "s".into(),
            channel: "North".into(),
            group_id: "ptt:s:North".into(),
            talker: "alice".into(),
            talker_id: "1".into(),
            start_ms,
            duration_ms: 1000,
            size_bytes: size,
            codec: "opus".into(),
            packets: 50,
        }
    }

    /// Five 100-byte bursts, indexed and on disk, started at 1..=5 days after the epoch.
    fn five(dir: &Path) -> Store {
        let store = Store::open(None).unwrap();
        for i in 1..=5 {
            let file = format!("{i}-x-alice.opus");
            std::fs::write(dir.join(&file), [0u8; 100]).unwrap();
            store
                .insert_burst(&row(&file, i * 86_400_000, 100))
                .unwrap();
        }
        store
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn retention_by_size_deletes_the_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = five(dir.path());
        let a = Archive {
            store: store.clone(),
            retention_days: 0,
            max_total_bytes: 250,
        };
        assert_eq!(apply_retention(&a, dir.path(), 10 * 86_400_000).unwrap(), 3);
        assert_eq!(files(dir.path()), ["4-x-alice.opus", "5-x-alice.opus"]);
        assert_eq!(store.burst_bytes().unwrap(), 200);
        let (left, total) = store.bursts(&Default::default(), 1, 10).unwrap();
        assert_eq!(total, 2);
        assert_eq!(left[0].file, "4-x-alice.opus");
        // Under the limit: nothing more goes.
        assert_eq!(apply_retention(&a, dir.path(), 10 * 86_400_000).unwrap(), 0);
    }

    #[test]
    fn retention_by_age_deletes_what_is_older() {
        let dir = tempfile::tempdir().unwrap();
        let store = five(dir.path());
        let a = Archive {
            store: store.clone(),
            retention_days: 2,
            max_total_bytes: 0,
        };
        // Now = day 5.5: days 1..=3 are older than 2 days.
        assert_eq!(
            apply_retention(&a, dir.path(), 5 * 86_400_000 + 43_200_000).unwrap(),
            3
        );
        assert_eq!(files(dir.path()), ["4-x-alice.opus", "5-x-alice.opus"]);
    }

    #[test]
    fn only_plain_names_are_archive_files() {
        for ok in ["1765-site_bridge-alice.opus", "1-x-Ünïcode.opus"] {
            assert!(safe_file_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "..opus",
            "a/../../b.opus",
            "/etc/x.opus",
            "a\\b.opus",
            ".hidden.opus",
            "index.jsonl",
            "x.opus\0",
            "a..b.opus",
        ] {
            assert!(!safe_file_name(bad), "{bad:?}");
        }
    }

    fn party() -> Party {
        Party {
            side: Side::Ptt,
            id: "7".into(),
            name: "alice".into(),
        }
    }

    const KEY: fn() -> BurstKey = || ("site/bridge".into(), 3);

    /// A writer into a temp dir whose bursts are indexed in an in-memory store.
    fn archived_writer() -> (tempfile::TempDir, Store, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(None).unwrap();
        let archive = Archive {
            store: store.clone(),
            retention_days: 0,
            max_total_bytes: 0,
        };
        let w = Writer::new(dir.path().to_owned(), Some(archive));
        (dir, store, w)
    }

    /// Alice starts a burst in `group`.
    fn start(w: &mut Writer, group: &str) {
        w.handle(Cmd::Start {
            key: KEY(),
            app_id: "app".into(),
            group_id: group.into(),
            party: party(),
        });
    }

    /// An Opus packet: TOC config 1 (SILK NB 20 ms), one frame.
    fn packet() -> Bytes {
        Bytes::from_static(&[0x08, 1, 2, 3, 4, 5, 6, 7])
    }

    #[test]
    fn a_burst_is_indexed_with_who_where_and_how_long() {
        let (dir, store, mut w) = archived_writer();
        start(&mut w, "ptt:site:North/Sub");
        for i in 0..50 {
            w.handle(Cmd::Packet {
                key: KEY(),
                sequence: i * 2,
                opus: packet(),
            });
        }
        w.handle(Cmd::Stop { key: KEY() });
        let (rows, total) = store.bursts(&Default::default(), 1, 10).unwrap();
        assert_eq!(total, 1);
        let b = &rows[0];
        assert_eq!(
            (b.side.as_str(), b.server.as_str(), b.channel.as_str()),
            ("ptt", "site", "North/Sub")
        );
        assert_eq!((b.talker.as_str(), b.talker_id.as_str()), ("alice", "7"));
        assert_eq!(
            (b.duration_ms, b.packets, b.codec.as_str()),
            (1000, 50, "opus")
        );
        let size = std::fs::metadata(dir.path().join(&b.file)).unwrap().len();
        assert_eq!(b.size_bytes as u64, size);
        assert!(safe_file_name(&b.file), "{}", b.file);
        // index.jsonl is still written, one line per burst.
        let index = std::fs::read_to_string(dir.path().join("index.jsonl")).unwrap();
        assert_eq!(index.lines().count(), 1);
    }

    #[test]
    fn a_lost_index_is_rebuilt_from_index_jsonl_where_the_files_are() {
        let (dir, _, mut w) = archived_writer();
        for group in ["ptt:site:North", "ptt:site:South"] {
            start(&mut w, group);
            w.handle(Cmd::Packet {
                key: KEY(),
                sequence: 0,
                opus: packet(),
            });
            w.handle(Cmd::Stop { key: KEY() });
        }
        // A room recording's line names its room; then garbage, a path trick and a file that
        // is gone.
        let room = IndexEntry {
            file: "9-room-5.opus".into(),
            app_id: "app".into(),
            group_id: "meeting:5".into(),
            party: party(),
            start_ms: 9,
            duration_ms: 20,
            packets: 1,
            channel: Some("briefing".into()),
        };
        std::fs::write(dir.path().join(&room.file), [0u8; 10]).unwrap();
        append_index(dir.path(), &room);
        let mut gone = room.clone();
        gone.file = "10-room-6.opus".into();
        append_index(dir.path(), &gone);
        let mut trick = room.clone();
        trick.file = "../escape.opus".into();
        append_index(dir.path(), &trick);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("index.jsonl"))
            .unwrap();
        writeln!(f, "{{not json").unwrap();

        // A new, empty store (the default in-memory one after a restart).
        let store = Store::open(None).unwrap();
        let archive = Archive {
            store: store.clone(),
            retention_days: 0,
            max_total_bytes: 0,
        };
        assert_eq!(rebuild_index(&archive, dir.path()), 3);
        let (rows, total) = store.bursts(&Default::default(), 1, 10).unwrap();
        assert_eq!(total, 3);
        let mut channels: Vec<&str> = rows.iter().map(|b| b.channel.as_str()).collect();
        channels.sort_unstable();
        assert_eq!(channels, ["North", "South", "briefing"]);
        assert!(rows.iter().all(|b| b.size_bytes > 0));
        // Nothing twice.
        assert_eq!(rebuild_index(&archive, dir.path()), 0);
    }

    #[test]
    fn a_full_disk_loses_the_burst_not_the_recorder() {
        if !Path::new("/dev/full").exists() {
            return;
        }
        let (dir, store, mut w) = archived_writer();
        start(&mut w, "ptt:site:North");
        // The disk fills up under the open burst: its writer now writes to /dev/full.
        let b = w.open.get_mut(&KEY()).unwrap();
        let full = File::options().write(true).open("/dev/full").unwrap();
        b.writer = OggOpusWriter::new(BufWriter::new(full), 9, &OggOpusHeader::default()).unwrap();
        let file = b.file.clone();
        for i in 0..2000 {
            w.handle(Cmd::Packet {
                key: KEY(),
                sequence: i * 2,
                opus: packet(),
            });
        }
        w.handle(Cmd::Stop { key: KEY() });
        assert!(w.open.is_empty(), "the burst is dropped");
        assert!(
            !dir.path().join(&file).exists(),
            "its partial file is removed"
        );
        assert_eq!(store.bursts(&Default::default(), 1, 10).unwrap().1, 0);
        // The next burst (the disk has room again) is recorded as usual.
        start(&mut w, "ptt:site:North");
        w.handle(Cmd::Packet {
            key: KEY(),
            sequence: 0,
            opus: packet(),
        });
        w.handle(Cmd::Stop { key: KEY() });
        assert_eq!(store.bursts(&Default::default(), 1, 10).unwrap().1, 1);
    }

    #[test]
    fn disk_full_is_recognised() {
        let e = media::Error::from(std::io::Error::from_raw_os_error(28));
        assert!(disk_full(&e), "{e}");
        let e = media::Error::from(std::io::Error::from_raw_os_error(13));
        assert!(!disk_full(&e), "{e}");
    }
}
