//! The PC's sound devices through cpal (ALSA, and PulseAudio or PipeWire behind it, on Linux;
//! WASAPI on Windows; CoreAudio on macOS): the microphone as mono 16-bit blocks at the device's
//! rate, the speaker fed from a short queue of mono samples at its rate.
//!
//! cpal streams are not `Send` on every platform, so both live on one thread of their own
//! ("audio devices"), which also reopens them when a device fails (unplugged headset): the
//! failure is reported once, then the thread tries again every [`RETRY`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};
use tokio::sync::mpsc;
use tracing::debug;

/// How often a failed device is tried again.
pub const RETRY: Duration = Duration::from_secs(2);

/// A stream whose callback has not run for this long has failed, whatever it reported: a sound
/// server's device that vanished can leave a stream that only returns errors a stream also
/// survives at start (ALSA over PulseAudio answers EIO both times).
const STALL: Duration = Duration::from_secs(2);

/// When a stream's callback last ran (ms since the audio thread began); shared with the
/// callback.
#[derive(Debug, Clone, Default)]
struct Heartbeat(Arc<std::sync::atomic::AtomicU64>);

impl Heartbeat {
    fn beat(&self, epoch: Instant) {
        self.0.store(
            epoch.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn age(&self, epoch: Instant) -> Duration {
        let last = self.0.load(std::sync::atomic::Ordering::Relaxed);
        epoch.elapsed().saturating_sub(Duration::from_millis(last))
    }
}

/// An open stream and what watches it.
struct Open {
    stream: cpal::Stream,
    rate: u32,
    what: String,
    heartbeat: Heartbeat,
}

/// Most audio the speaker queue holds (ms): more means the playback fell behind; the oldest is
/// dropped so the delay stays short.
const SPEAKER_QUEUE_MS: usize = 200;

/// The devices cpal sees.
#[derive(Debug, Clone, Default)]
pub struct DeviceList {
    /// Microphones by name; the default one first.
    pub inputs: Vec<String>,
    /// Speakers by name; the default one first.
    pub outputs: Vec<String>,
}

/// Lists the host's input and output devices.
pub fn list() -> anyhow::Result<DeviceList> {
    let host = cpal::default_host();
    let name = |d: &cpal::Device| d.to_string();
    let mut inputs: Vec<String> = host.input_devices()?.map(|d| name(&d)).collect();
    let mut outputs: Vec<String> = host.output_devices()?.map(|d| name(&d)).collect();
    if let Some(d) = host.default_input_device() {
        let n = name(&d);
        inputs.retain(|i| *i != n);
        inputs.insert(0, n);
    }
    if let Some(d) = host.default_output_device() {
        let n = name(&d);
        outputs.retain(|o| *o != n);
        outputs.insert(0, n);
    }
    Ok(DeviceList { inputs, outputs })
}

/// What the audio thread tells the agent.
#[derive(Debug)]
pub enum DeviceEvent {
    /// The microphone is open at this rate (Hz).
    InputOpen(u32),
    /// The speaker is open at this rate (Hz).
    OutputOpen(u32),
    /// A device failed or could not be opened; it is tried again every [`RETRY`].
    Failed(String),
}

/// Audio the speaker queue gathers before it starts playing, and again after it ran dry (ms):
/// the device takes its blocks at its own pace (ALSA through PulseAudio asks for tens of ms at
/// once), and a block that finds the queue half full would cut the speech into pieces.
const SPEAKER_PRIME_MS: usize = 60;

/// The speaker's queue: mono samples at the speaker's rate, written by the agent, read by the
/// device callback (silence while it gathers [`SPEAKER_PRIME_MS`]).
#[derive(Debug, Clone, Default)]
pub struct SpeakerQueue(Arc<Mutex<Queue>>);

#[derive(Debug, Default)]
struct Queue {
    samples: VecDeque<i16>,
    rate: u32,
    playing: bool,
}

impl SpeakerQueue {
    /// Adds samples; beyond [`SPEAKER_QUEUE_MS`] at `rate` the oldest go.
    pub fn push(&self, samples: &[i16], rate: u32) {
        let cap = rate as usize * SPEAKER_QUEUE_MS / 1000;
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.rate = rate;
        q.samples.extend(samples);
        let excess = q.samples.len().saturating_sub(cap);
        q.samples.drain(..excess);
    }

    /// Drops everything queued.
    pub fn clear(&self) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.samples.clear();
        q.playing = false;
    }

    /// Samples queued.
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .samples
            .len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fill<T: SizedSample + FromSample<i16>>(&self, out: &mut [T], channels: usize) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !q.playing && q.samples.len() >= q.rate as usize * SPEAKER_PRIME_MS / 1000 {
            q.playing = true;
        }
        for frame in out.chunks_mut(channels) {
            let next = if q.playing {
                q.samples.pop_front()
            } else {
                None
            };
            if next.is_none() {
                q.playing = false;
            }
            frame.fill(T::from_sample(next.unwrap_or(0)));
        }
    }
}

/// Which devices to open.
#[derive(Debug, Clone, Default)]
pub struct DeviceChoice {
    /// Microphone name (or a unique part of it); `None`: the default.
    pub input: Option<String>,
    /// Speaker name (or a unique part of it); `None`: the default.
    pub output: Option<String>,
}

/// Starts the audio thread: microphone blocks go to `mic` (dropped when the agent is behind),
/// the speaker plays `speaker`, and what happens to the devices goes to `events`.
pub fn start(
    choice: DeviceChoice,
    mic: mpsc::Sender<Vec<i16>>,
    speaker: SpeakerQueue,
    events: mpsc::UnboundedSender<DeviceEvent>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("audio devices".into())
        .spawn(move || run(choice, mic, speaker, events))
        .map(drop)
}

fn run(
    choice: DeviceChoice,
    mic: mpsc::Sender<Vec<i16>>,
    speaker: SpeakerQueue,
    events: mpsc::UnboundedSender<DeviceEvent>,
) {
    let host = cpal::default_host();
    let epoch = Instant::now();
    let (failed_tx, failed_rx) = std::sync::mpsc::channel::<String>();
    loop {
        if events.is_closed() {
            return;
        }
        let opened =
            open_input(&host, choice.input.as_deref(), &mic, &failed_tx, epoch).and_then(|input| {
                let output =
                    open_output(&host, choice.output.as_deref(), &speaker, &failed_tx, epoch)?;
                Ok((input, output))
            });
        match opened {
            Ok((input, output)) => {
                let _ = events.send(DeviceEvent::InputOpen(input.rate));
                let _ = events.send(DeviceEvent::OutputOpen(output.rate));
                // Until a device fails or stalls (or the agent is gone).
                let why = loop {
                    match failed_rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(why) => break why,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) if events.is_closed() => {
                            return;
                        }
                        Err(_) => {}
                    }
                    if let Some(o) = [&input, &output]
                        .into_iter()
                        .find(|o| o.heartbeat.age(epoch) > STALL)
                    {
                        break format!("{}: no audio for {} s", o.what, STALL.as_secs());
                    }
                };
                let _ = events.send(DeviceEvent::Failed(why));
                // Closing a stream waits for its worker, which a vanished sound server can
                // leave blocked for good: close them aside so this thread goes on reopening.
                let streams = (input.stream, output.stream);
                let _ = std::thread::Builder::new()
                    .name("audio close".into())
                    .spawn(move || drop(streams));
            }
            Err(why) => {
                let _ = events.send(DeviceEvent::Failed(why));
            }
        }
        // Errors a dying stream reported after the first are about the same failure.
        while failed_rx.try_recv().is_ok() {}
        std::thread::sleep(RETRY);
    }
}

fn find(
    mut devices: impl Iterator<Item = cpal::Device>,
    default: Option<cpal::Device>,
    wanted: Option<&str>,
    what: &str,
) -> Result<cpal::Device, String> {
    match wanted {
        None => default.ok_or_else(|| format!("no default {what}")),
        Some(w) => {
            let all: Vec<cpal::Device> = devices.by_ref().collect();
            if let Some(d) = all.iter().find(|d| d.to_string() == w) {
                return Ok(d.clone());
            }
            let matching: Vec<&cpal::Device> =
                all.iter().filter(|d| d.to_string().contains(w)).collect();
            match matching[..] {
                [one] => Ok(one.clone()),
                [] => Err(format!("no {what} named {w:?} (see --list-devices)")),
                _ => Err(format!(
                    "{} {what}s match {w:?}: {}",
                    matching.len(),
                    matching
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}

/// The device's configuration to use: 48 kHz when it has it (no resampling), mono when it has
/// it, 16-bit or float samples.
fn pick(
    ranges: Vec<cpal::SupportedStreamConfigRange>,
    default: Option<cpal::SupportedStreamConfig>,
) -> Result<(StreamConfig, SampleFormat), String> {
    let usable = |f: SampleFormat| matches!(f, SampleFormat::I16 | SampleFormat::F32);
    let mut best: Option<(u32, cpal::SupportedStreamConfig)> = None;
    for r in ranges {
        if !usable(r.sample_format()) {
            continue;
        }
        let (score, cfg) = match r.try_with_sample_rate(48_000) {
            Some(c) => (if r.channels() == 1 { 3 } else { 2 }, c),
            None => (1, r.with_max_sample_rate()),
        };
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, cfg));
        }
    }
    let cfg = match best {
        Some((_, c)) => c,
        None => default
            .filter(|d| usable(d.sample_format()))
            .ok_or("the device offers neither 16-bit nor float samples")?,
    };
    let rate = cfg.sample_rate();
    if !media::resample::RATES.contains(&rate) {
        return Err(format!(
            "the device runs at {rate} Hz, which the agent cannot convert"
        ));
    }
    let mut config = cfg.config();
    // Blocks of 20 ms where the device allows: its default can be far longer (ALSA through
    // PulseAudio can hand the microphone over in blocks of up to a second), and a block is only
    // delivered when it is full, so the voice would wait for it.
    config.buffer_size = cpal::BufferSize::Fixed(match *cfg.buffer_size() {
        cpal::SupportedBufferSize::Range { min, max } => (rate / 50).clamp(min, max),
        cpal::SupportedBufferSize::Unknown => rate / 50,
    });
    Ok((config, cfg.sample_format()))
}

/// A stream's error callback: a device that is gone (or a stream that must be rebuilt) is
/// reported for the thread to reopen it; anything else (an xrun, a transient backend error such
/// as ALSA-over-PulseAudio's EIO while its stream starts) the stream survives, so it is only
/// logged.
fn on_error(
    failed: &std::sync::mpsc::Sender<String>,
    what: String,
) -> impl FnMut(cpal::Error) + Send + 'static {
    let failed = failed.clone();
    move |e: cpal::Error| match e.kind() {
        cpal::ErrorKind::DeviceNotAvailable
        | cpal::ErrorKind::StreamInvalidated
        | cpal::ErrorKind::HostUnavailable => {
            let _ = failed.send(format!("{what}: {e}"));
        }
        _ => debug!(device = %what, error = %e, "sound device hiccup"),
    }
}

/// Which side of the sound card.
#[derive(Debug, Clone, Copy)]
enum Direction {
    Input,
    Output,
}

/// An error callback handed to a stream builder.
type OnError = Box<dyn FnMut(cpal::Error) + Send + 'static>;

/// Finds the device, picks its configuration, and builds (with `build`: the device, the
/// configuration, its sample format and channel count, the stream's heartbeat, its error
/// callback) and starts its stream.
fn open(
    host: &cpal::Host,
    direction: Direction,
    wanted: Option<&str>,
    failed: &std::sync::mpsc::Sender<String>,
    epoch: Instant,
    build: impl Fn(
        &cpal::Device,
        StreamConfig,
        SampleFormat,
        usize,
        Heartbeat,
        OnError,
    ) -> Result<cpal::Stream, cpal::Error>,
) -> Result<Open, String> {
    let (device, what, ranges, default) = match direction {
        Direction::Input => {
            let all = host
                .input_devices()
                .map_err(|e| format!("microphones: {e}"))?;
            let device = find(all, host.default_input_device(), wanted, "microphone")?;
            let what = format!("microphone {device}");
            let ranges = device.supported_input_configs().map(Iterator::collect);
            let default = device.default_input_config().ok();
            (device, what, ranges, default)
        }
        Direction::Output => {
            let all = host
                .output_devices()
                .map_err(|e| format!("speakers: {e}"))?;
            let device = find(all, host.default_output_device(), wanted, "speaker")?;
            let what = format!("speaker {device}");
            let ranges = device.supported_output_configs().map(Iterator::collect);
            let default = device.default_output_config().ok();
            (device, what, ranges, default)
        }
    };
    let ranges = ranges.map_err(|e| format!("{what}: {e}"))?;
    let (config, format) = pick(ranges, default)?;
    let channels = usize::from(config.channels);
    let heartbeat = Heartbeat::default();
    heartbeat.beat(epoch);
    let stream = with_fallback(config, |config| {
        let on_error: OnError = Box::new(on_error(failed, what.clone()));
        build(
            &device,
            config,
            format,
            channels,
            heartbeat.clone(),
            on_error,
        )
    })
    .map_err(|e| format!("{what}: {e}"))?;
    stream.play().map_err(|e| format!("{what}: {e}"))?;
    Ok(Open {
        stream,
        rate: config.sample_rate,
        what,
        heartbeat,
    })
}

fn open_input(
    host: &cpal::Host,
    wanted: Option<&str>,
    mic: &mpsc::Sender<Vec<i16>>,
    failed: &std::sync::mpsc::Sender<String>,
    epoch: Instant,
) -> Result<Open, String> {
    open(
        host,
        Direction::Input,
        wanted,
        failed,
        epoch,
        |device, config, format, channels, beat, on_error| {
            let beat = (beat, epoch);
            match format {
                SampleFormat::F32 => {
                    input_stream::<f32>(device, config, channels, mic.clone(), beat, on_error)
                }
                _ => input_stream::<i16>(device, config, channels, mic.clone(), beat, on_error),
            }
        },
    )
}

/// Builds with `config` (20 ms blocks), or with the device's own block size when it refuses.
fn with_fallback(
    config: StreamConfig,
    build: impl Fn(StreamConfig) -> Result<cpal::Stream, cpal::Error>,
) -> Result<cpal::Stream, cpal::Error> {
    build(config).or_else(|e| {
        debug!(error = %e, "20 ms blocks refused; using the device's own");
        build(StreamConfig {
            buffer_size: cpal::BufferSize::Default,
            ..config
        })
    })
}

fn input_stream<T>(
    device: &cpal::Device,
    config: StreamConfig,
    channels: usize,
    mic: mpsc::Sender<Vec<i16>>,
    (heartbeat, epoch): (Heartbeat, Instant),
    on_error: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    i16: FromSample<T>,
{
    device.build_input_stream::<T, _, _>(
        config,
        move |data: &[T], _| {
            heartbeat.beat(epoch);
            // Mono: the first channel (a headset microphone is on it; averaging would halve a
            // one-sided signal).
            let block: Vec<i16> = data
                .chunks(channels)
                .map(|f| i16::from_sample(f[0]))
                .collect();
            // Never wait in the device's callback: a late agent loses this block.
            let _ = mic.try_send(block);
        },
        on_error,
        None,
    )
}

fn open_output(
    host: &cpal::Host,
    wanted: Option<&str>,
    speaker: &SpeakerQueue,
    failed: &std::sync::mpsc::Sender<String>,
    epoch: Instant,
) -> Result<Open, String> {
    open(
        host,
        Direction::Output,
        wanted,
        failed,
        epoch,
        |device, config, format, channels, beat, on_error| {
            let queue = speaker.clone();
            match format {
                SampleFormat::F32 => device.build_output_stream::<f32, _, _>(
                    config,
                    move |out: &mut [f32], _| {
                        beat.beat(epoch);
                        queue.fill(out, channels)
                    },
                    on_error,
                    None,
                ),
                _ => device.build_output_stream::<i16, _, _>(
                    config,
                    move |out: &mut [i16], _| {
                        beat.beat(epoch);
                        queue.fill(out, channels)
                    },
                    on_error,
                    None,
                ),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_speaker_queue_keeps_the_newest_200_ms() {
        let q = SpeakerQueue::default();
        q.push(&vec![1; 8000], 48_000);
        q.push(&vec![2; 4000], 48_000);
        assert_eq!(q.len(), 9600);
        let mut out = vec![0i16; 2 * 9600 + 4];
        q.fill(&mut out, 2);
        assert_eq!(out[0], 1);
        assert_eq!(out[2 * 9599], 2);
        assert_eq!(out[2 * 9599 + 1], 2, "every channel gets the sample");
        assert_eq!(out[2 * 9600], 0, "silence when dry");
    }

    #[test]
    fn the_speaker_waits_for_60_ms_before_playing_again() {
        let q = SpeakerQueue::default();
        q.push(&[5; 960], 48_000);
        let mut out = vec![0i16; 480];
        q.fill(&mut out, 1);
        assert!(out.iter().all(|s| *s == 0), "20 ms is not enough to start");
        q.push(&[5; 1920], 48_000);
        q.fill(&mut out, 1);
        assert!(out.iter().all(|s| *s == 5), "60 ms is");
        assert_eq!(q.len(), 2400);
    }
}
