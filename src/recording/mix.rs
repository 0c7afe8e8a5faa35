//! Server recordings of a meeting room (527meeting `meeting.startRecord`, §3.35): every track
//! the room's members hear — each member's published audio and what the dialled-in PTT
//! channel sends them — mixed down ([`media::mixdown`]) into one Ogg Opus file that runs in
//! real time. The room actor only hands packets and its 20 ms ticks to the recorder thread
//! (`try_send`); decoding, mixing, encoding and the file are that thread's work.
//!
//! A recording is indexed in the archive like a burst (`side` `meeting`, the room as its
//! channel) so the archive's listing, download, deletion, retention and the spec's
//! `getRecordByRange`/`deleteRecords` cover it. Its row is inserted when it starts — the start
//! answers with the row's id, the spec's `recordId` — and completed when it stops.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::mixdown::{Mixdown, MixdownConfig};
use media::ogg_writer::{OggOpusHeader, OggOpusWriter};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{
    Archive, IndexEntry, append_index, count_write_error, create_new, now_ms, remove_file,
};
use crate::hub::Party;
use crate::storage::{BurstRow, StoreError};

/// A recording whose room has not ticked for this long is closed by the recorder.
pub const STALE: Duration = Duration::from_secs(5);

/// Which room's recording a command is for (the room id: a room records once at a time).
pub type MixKey = i64;

/// Why a recording could not start.
#[derive(Debug, thiserror::Error)]
pub enum MixError {
    /// Recordings are indexed in the archive, and there is none (`[recording] dir` unset).
    #[error("server recording is off: no archive ([recording] dir)")]
    NoArchive,
    /// The recorder thread is behind (its queue is full) or gone.
    #[error("the recorder is busy")]
    Busy,
    /// The file could not be created.
    #[error("cannot create the recording file: {0}")]
    File(#[from] media::Error),
    /// The index said no.
    #[error("cannot index the recording: {0}")]
    Store(#[from] StoreError),
}

/// What a room says when its recording starts.
#[derive(Debug)]
pub struct MixStart {
    /// The room.
    pub key: MixKey,
    /// Tenant.
    pub app_id: String,
    /// The room's hub group (`room:<id>`).
    pub group_id: String,
    /// The room's name (the archive row's channel, the spec's `roomName`).
    pub room_name: String,
    /// The recording's name (the spec's `fileName`; the start time when not given).
    pub name: String,
    /// Who started it (the row's talker id: the spec's `userId`).
    pub by: Party,
    /// The room's clock: packet and tick instants are measured from here.
    pub epoch: Instant,
    /// Told the recording's id (the archive row), or why it did not start.
    pub reply: oneshot::Sender<Result<i64, MixError>>,
}

/// One recording in progress on the recorder thread.
pub(super) struct Mix {
    mixdown: Mixdown,
    writer: OggOpusWriter<BufWriter<File>>,
    row: BurstRow,
    epoch: Instant,
    last_tick: Instant,
}

impl Mix {
    /// Opens the file, inserts the row and starts the mixdown.
    pub(super) fn open(
        dir: &Path,
        archive: Option<&Archive>,
        serial: u32,
        s: &MixStart,
    ) -> Result<Self, MixError> {
        let archive = archive.ok_or(MixError::NoArchive)?;
        let start_ms = now_ms();
        let (file, out) =
            create_new(dir, &format!("{start_ms}-room-{}", s.key)).map_err(media::Error::from)?;
        let out = BufWriter::new(out);
        let header = OggOpusHeader {
            comments: vec![
                format!("TITLE={} in {}", s.name, s.room_name),
                format!("GROUP={}", s.group_id),
                format!("APP={}", s.app_id),
                format!("START_MS={start_ms}"),
            ],
            ..OggOpusHeader::default()
        };
        let writer = OggOpusWriter::new(out, serial, &header)?;
        let mut row = BurstRow {
            id: 0,
            file,
            app_id: s.app_id.clone(),
            side: "meeting".into(),
            server: String::new(),
            channel: s.room_name.clone(),
            group_id: s.group_id.clone(),
            talker: s.name.clone(),
            talker_id: s.by.id.clone(),
            start_ms: start_ms as i64,
            duration_ms: 0,
            size_bytes: 0,
            codec: "opus".into(),
            packets: 0,
        };
        row.id = match archive.store.insert_burst(&row) {
            Ok(id) => id,
            Err(e) => {
                drop(writer);
                remove_file(dir, &row.file);
                return Err(e.into());
            }
        };
        info!(room = s.key, record = row.id, file = %row.file, "room recording started");
        Ok(Self {
            mixdown: Mixdown::new(MixdownConfig::default())?,
            writer,
            row,
            epoch: s.epoch,
            last_tick: Instant::now(),
        })
    }

    /// The archive row's id.
    pub(super) fn id(&self) -> i64 {
        self.row.id
    }

    fn us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// One packet of a track.
    pub(super) fn packet(&mut self, track: u64, ts: u32, payload: Bytes, at: Instant) {
        let us = self.us(at);
        if self.mixdown.push(track, ts, payload, us).is_err() {
            metrics::counter!("pttbridge_recording_dropped_total").increment(1);
        }
    }

    /// Whether its room stopped ticking ([`STALE`]).
    pub(super) fn stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_tick) > STALE
    }

    /// One 20 ms tick: the mix's next packet written. An error means the file is lost.
    pub(super) fn tick(&mut self, at: Instant) -> media::Result<()> {
        self.last_tick = Instant::now();
        let packet = self.mixdown.tick(self.us(at))?;
        self.writer.write_packet(&packet)
    }

    /// Closes the file and completes the row.
    pub(super) fn finish(self, dir: &Path, archive: Option<&Archive>) {
        let packets = self.writer.packets() as i64;
        let duration_ms = (self.writer.samples() / 48) as i64;
        let row = self.row;
        if let Err(e) = self.writer.finish() {
            self::abandon(dir, archive, &row, &e);
            return;
        }
        let size = std::fs::metadata(dir.join(&row.file)).map_or(0, |m| m.len()) as i64;
        if let Some(a) = archive {
            match a.store.complete_burst(row.id, duration_ms, size, packets) {
                Ok(true) => {
                    metrics::gauge!("pttbridge_recording_archive_bytes").increment(size as f64);
                    metrics::counter!("pttbridge_recordings_total").increment(1);
                }
                // Deleted while it ran: the file goes with its row.
                Ok(false) => {
                    remove_file(dir, &row.file);
                    return;
                }
                Err(e) => warn!("cannot index a room recording: {e}"),
            }
        }
        // As every burst: a line in index.jsonl, from which the index can be rebuilt.
        append_index(
            dir,
            &IndexEntry {
                file: row.file.clone(),
                app_id: row.app_id.clone(),
                group_id: row.group_id.clone(),
                party: Party {
                    side: crate::hub::Side::Meeting,
                    id: row.talker_id.clone(),
                    name: row.talker.clone(),
                },
                start_ms: row.start_ms as u64,
                duration_ms: duration_ms as u64,
                packets: packets as u64,
                channel: Some(row.channel.clone()),
            },
        );
        info!(record = row.id, duration_ms, size, "room recording stopped");
    }

    /// Gives the recording up after a write error: its partial file and its row go.
    pub(super) fn fail(self, dir: &Path, archive: Option<&Archive>, e: &media::Error) {
        let row = self.row;
        drop(self.writer);
        abandon(dir, archive, &row, e);
    }
}

fn abandon(dir: &Path, archive: Option<&Archive>, row: &BurstRow, e: &dyn std::fmt::Display) {
    count_write_error(e, &row.file);
    remove_file(dir, &row.file);
    if let Some(a) = archive {
        let _ = a.store.delete_burst(row.id);
    }
}
