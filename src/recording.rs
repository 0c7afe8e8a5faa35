//! Talk-burst recording: every burst a bridged side hears becomes one Ogg Opus file
//! (the talker's own packets, never re-encoded) plus a line in `index.jsonl` saying
//! who, where, when and how long.
//!
//! File IO runs on its own thread behind a bounded queue, so a slow disk can cost
//! recordings (counted) but never delays the audio path.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use media::ogg_writer::{OggOpusHeader, OggOpusWriter};
use serde::Serialize;
use tracing::warn;

use crate::hub::Party;

/// Commands queued before the recorder thread falls behind and drops them.
const QUEUE: usize = 4096;

/// Identifies one talker's burst: the source (side/account) and the talker's id there.
pub type BurstKey = (String, u32);

/// One line of `index.jsonl`.
#[derive(Debug, Clone, Serialize)]
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
}

/// Handle to the recorder thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: SyncSender<Cmd>,
}

impl Recorder {
    /// Starts the recorder thread writing into `dir` (created if missing).
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = sync_channel(QUEUE);
        let dir = dir.to_owned();
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || Writer::new(dir).run(rx))?;
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
    serial: u32,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Writer {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            open: HashMap::new(),
            serial: 1,
        }
    }

    fn run(mut self, rx: Receiver<Cmd>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Cmd::Start {
                    key,
                    app_id,
                    group_id,
                    party,
                } => {
                    self.close(&key);
                    if let Err(e) = self.open(key, app_id, group_id, party) {
                        warn!("cannot start a recording: {e}");
                        metrics::counter!("pttbridge_recording_errors_total").increment(1);
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
                        let frames = media::opus_toc::parse(&opus)
                            .map_or(2, |i| u64::from(i.samples_48k) / 480);
                        b.next_seq = Some(sequence + frames.max(1));
                        if b.writer.write_packet(&opus).is_err() {
                            metrics::counter!("pttbridge_recording_errors_total").increment(1);
                        }
                    }
                }
                Cmd::Stop { key } => self.close(&key),
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
        let keys: Vec<BurstKey> = self.open.keys().cloned().collect();
        for k in keys {
            self.close(&k);
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
        let file = format!("{start_ms}-{}-{}.opus", safe(&key.0), safe(&party.name));
        let out = BufWriter::new(File::create(self.dir.join(&file))?);
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
            warn!(file = %b.file, "cannot finish a recording: {e}");
            metrics::counter!("pttbridge_recording_errors_total").increment(1);
            return;
        }
        let entry = IndexEntry {
            file: b.file,
            app_id: b.app_id,
            group_id: b.group_id,
            party: b.party,
            start_ms: b.start_ms,
            duration_ms,
            packets,
        };
        let line = serde_json::to_string(&entry).unwrap_or_default();
        let index = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("index.jsonl"));
        match index.and_then(|mut f| writeln!(f, "{line}")) {
            Ok(()) => metrics::counter!("pttbridge_recordings_total").increment(1),
            Err(e) => warn!("cannot write the recording index: {e}"),
        }
    }
}
