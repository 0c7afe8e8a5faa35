//! Comparing received audio with what was sent: the proof that an audio path works is that the
//! far end hears the same speech, at the right level and time, not that packets arrived.
//!
//! [`compare`] aligns the recording with the source (FFT cross-correlation), then, over every
//! 100 ms window where the source has speech energy, computes the Pearson correlation of source and
//! recording; it also reports the overall SNR, the level change and the active-speech durations.
//!
//! ```no_run
//! let cmp = testkit::audio::compare_files("fixtures/audio/speech.wav", "/tmp/heard.wav");
//! assert!(cmp.median_correlation >= 0.9, "{cmp}");
//! cmp.assert_matches(0.9, 0.05);
//! ```

use std::fmt;
use std::path::Path;

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// The sample rate of every WAV the tests use (Opus and WebRTC audio are 48 kHz).
pub const RATE: u32 = 48_000;

/// A WAV that could not be read or is not in a usable format.
#[derive(Debug, Clone, PartialEq)]
pub struct WavError(pub String);

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WavError {}

/// Reads a 48 kHz WAV (16/24/32-bit integer or 32-bit float, any channel count) as mono f32 in
/// [-1, 1] (channels are averaged). Other sample rates are an error rather than silently resampled,
/// so a wrong rate cannot pass as "different audio".
pub fn read_wav(path: impl AsRef<Path>) -> Result<Vec<f32>, WavError> {
    let path = path.as_ref();
    let err = |e: &dyn fmt::Display| WavError(format!("{}: {e}", path.display()));
    let mut r = hound::WavReader::open(path).map_err(|e| err(&e))?;
    let spec = r.spec();
    if spec.sample_rate != RATE {
        return Err(err(&format!(
            "sample rate {} Hz, expected {RATE} Hz",
            spec.sample_rate
        )));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| err(&e))?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(|e| err(&e))?
        }
    };
    let ch = spec.channels.max(1) as usize;
    Ok(interleaved
        .chunks(ch)
        .map(|frame| frame.iter().sum::<f32>() / ch as f32)
        .collect())
}

/// [`read_wav`] that panics with the path and reason (for tests).
pub fn load_wav(path: impl AsRef<Path>) -> Vec<f32> {
    read_wav(path).unwrap_or_else(|e| panic!("cannot read WAV {e}"))
}

/// Writes mono f32 samples as a 48 kHz 16-bit WAV (clipping to [-1, 1]).
pub fn write_wav(path: impl AsRef<Path>, samples: &[f32]) -> Result<(), WavError> {
    let path = path.as_ref();
    let err = |e: hound::Error| WavError(format!("{}: {e}", path.display()));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(err)?;
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
            .map_err(err)?;
    }
    w.finalize().map_err(err)
}

/// Writes a 440 Hz tone of `secs` (48 kHz mono) to `dir/tone-<secs>.wav`: one talk burst with
/// no pause in it.
pub fn tone_wav(dir: &Path, secs: f64) -> std::path::PathBuf {
    let path = dir.join(format!("tone-{secs}.wav"));
    let samples: Vec<f32> = media::signal::sine(48_000, 440.0, 0.3, secs)
        .iter()
        .map(|s| f32::from(*s) / 32767.0)
        .collect();
    write_wav(&path, &samples).expect("tone written");
    path
}

/// Decodes an Ogg Opus file (such as a bridge recording) to mono f32 at 48 kHz, pre-skip removed.
pub fn read_ogg_opus(path: impl AsRef<Path>) -> Result<Vec<f32>, WavError> {
    let path = path.as_ref();
    let err = |m: String| WavError(format!("{}: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut reader = ogg::PacketReader::new(std::io::BufReader::new(file));
    let mut decoder = None;
    let mut pre_skip = 0usize;
    let mut out = Vec::new();
    let mut pcm = vec![0i16; 5760 * 2];
    while let Some(packet) = reader.read_packet().map_err(|e| err(e.to_string()))? {
        let data = &packet.data;
        if data.starts_with(b"OpusHead") {
            let channels = data.get(9).copied().unwrap_or(1);
            pre_skip = usize::from(u16::from_le_bytes([data[10], data[11]]));
            let ch = media::Channels::from_count(usize::from(channels))
                .ok_or_else(|| err("bad channel count".into()))?;
            decoder = Some((
                media::opus::Decoder::new(48_000, ch).map_err(|e| err(e.to_string()))?,
                usize::from(channels),
            ));
            continue;
        }
        if data.starts_with(b"OpusTags") {
            continue;
        }
        let Some((dec, ch)) = decoder.as_mut() else {
            return Err(err("audio before OpusHead".into()));
        };
        // Empty frames mark gaps: let the decoder conceal them for their duration.
        let n = if data.len() <= 1 {
            let samples = media::opus_toc::parse(data)
                .map(|i| i.samples_48k as usize)
                .unwrap_or(960);
            dec.decode(None, false, &mut pcm[..samples * *ch])
                .map_err(|e| err(e.to_string()))?
        } else {
            dec.decode(Some(data), false, &mut pcm)
                .map_err(|e| err(e.to_string()))?
        };
        for frame in pcm[..n * *ch].chunks(*ch) {
            out.push(frame.iter().map(|&s| f32::from(s) / 32768.0).sum::<f32>() / *ch as f32);
        }
    }
    Ok(out.split_off(pre_skip.min(out.len())))
}

/// The delay of `recording` relative to `reference`, in samples: `recording[n + lag]` best matches
/// `reference[n]` (positive when the recording starts later). Found as the peak of the FFT
/// cross-correlation over every overlap.
pub fn find_lag(reference: &[f32], recording: &[f32]) -> isize {
    if reference.is_empty() || recording.is_empty() {
        return 0;
    }
    let n = (reference.len() + recording.len()).next_power_of_two();
    let mut planner = FftPlanner::<f32>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let spectrum = |x: &[f32]| {
        let mut buf: Vec<Complex<f32>> = x.iter().map(|&v| Complex::new(v, 0.0)).collect();
        buf.resize(n, Complex::new(0.0, 0.0));
        fwd.process(&mut buf);
        buf
    };
    let a = spectrum(recording);
    let b = spectrum(reference);
    // corr[k] = sum_n rec[n + k] * ref[n]  <=>  IFFT(REC * conj(REF)); negative k wrap to n + k
    let mut c: Vec<Complex<f32>> = a.iter().zip(&b).map(|(x, y)| x * y.conj()).collect();
    inv.process(&mut c);
    let mut best = (0isize, f32::MIN);
    for (i, v) in c.iter().enumerate() {
        let lag = if i < recording.len() {
            i as isize
        } else if i > n - reference.len() {
            i as isize - n as isize
        } else {
            continue; // lags with no overlap at all
        };
        if v.re > best.1 {
            best = (lag, v.re);
        }
    }
    best.0
}

/// Root mean square of `x` (0 for empty input).
pub fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / x.len() as f64).sqrt() as f32
}

/// A level in dBFS (or any ratio in dB); very small values floor at -200 dB instead of -inf.
pub fn db(amplitude: f32) -> f32 {
    20.0 * amplitude.max(1e-10).log10()
}

/// Pearson correlation of two equally long slices; 0 when either is constant (e.g. silence).
pub fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
    let mb = b.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
    let (mut sab, mut saa, mut sbb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (*x as f64 - ma, *y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa <= 1e-20 || sbb <= 1e-20 {
        return 0.0;
    }
    (sab / (saa * sbb).sqrt()) as f32
}

/// First and last sample index (inclusive) whose magnitude exceeds `threshold`.
pub fn active_span(x: &[f32], threshold: f32) -> Option<(usize, usize)> {
    let first = x.iter().position(|v| v.abs() > threshold)?;
    let last = x.iter().rposition(|v| v.abs() > threshold)?;
    Some((first, last))
}

/// Length in seconds of [`active_span`] with a threshold relative to the signal's own peak.
pub fn active_seconds(x: &[f32], rel_threshold: f32) -> f32 {
    let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if peak <= 0.0 {
        return 0.0;
    }
    active_span(x, peak * rel_threshold)
        .map(|(a, b)| (b - a + 1) as f32 / RATE as f32)
        .unwrap_or(0.0)
}

/// Knobs of [`compare_with`]; [`Default`] is what the project's audio bars are measured with.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareOptions {
    /// Window length for the per-window correlation (100 ms).
    pub window_ms: u32,
    /// A source window counts as speech when its RMS is at least this fraction of the loudest
    /// source window's RMS (0.1 = within 20 dB of the loudest).
    pub speech_rel_rms: f32,
    /// A window correlation at or above this counts as good (0.9).
    pub good_correlation: f32,
    /// Active speech starts/ends at the first/last sample above this fraction of the signal's own
    /// peak (0.05 = 26 dB below the peak).
    pub active_rel_threshold: f32,
    /// 0: every window is compared at the one lag found for the whole recording. Otherwise each
    /// window is compared at its own best lag within this many ms of it: for players whose jitter
    /// buffer time-stretches (a browser's NetEQ adds or removes ~10 ms pieces as its delay adapts),
    /// which shifts the alignment during a burst without changing the waveform.
    pub window_search_ms: u32,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            window_ms: 100,
            speech_rel_rms: 0.1,
            good_correlation: 0.9,
            active_rel_threshold: 0.05,
            window_search_ms: 0,
        }
    }
}

/// How a recording matches its source; its Display is made for assertion messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Delay of the recording relative to the source, in samples at 48 kHz.
    pub lag_samples: isize,
    /// Number of source windows with speech energy that were compared.
    pub windows: usize,
    /// Median Pearson correlation over those windows.
    pub median_correlation: f32,
    /// Lowest window correlation.
    pub min_correlation: f32,
    /// Fraction of windows with correlation >= `good_threshold`.
    pub fraction_good: f32,
    /// The threshold used for `fraction_good`.
    pub good_threshold: f32,
    /// Signal-to-noise ratio of the aligned recording over the source's span, after fitting the best
    /// gain (what is left is codec noise, dropouts and anything else added).
    pub snr_db: f32,
    /// Level of the recording relative to the source (least-squares gain), in dB.
    pub gain_db: f32,
    /// RMS level of the source over its whole length, dBFS.
    pub reference_rms_db: f32,
    /// RMS level of the recording over the source's aligned span, dBFS.
    pub recording_rms_db: f32,
    /// Active-speech duration of the source, seconds.
    pub reference_active_s: f32,
    /// Active-speech duration of the recording, seconds.
    pub recording_active_s: f32,
    /// Total lengths, seconds.
    pub reference_len_s: f32,
    /// Total length of the recording, seconds.
    pub recording_len_s: f32,
}

impl Comparison {
    /// The lag in milliseconds.
    pub fn lag_ms(&self) -> f32 {
        self.lag_samples as f32 * 1000.0 / RATE as f32
    }

    /// Recording's active duration / source's active duration (1.0 = same).
    pub fn duration_ratio(&self) -> f32 {
        if self.reference_active_s <= 0.0 {
            return 0.0;
        }
        self.recording_active_s / self.reference_active_s
    }

    /// Panics with the whole comparison unless the median window correlation is at least
    /// `min_median` and the active durations differ by at most `duration_tolerance` (0.05 = 5 %).
    pub fn assert_matches(&self, min_median: f32, duration_tolerance: f32) {
        assert!(
            self.windows > 0,
            "no speech windows compared (silent source?): {self}"
        );
        assert!(
            self.median_correlation >= min_median,
            "median window correlation {:.3} < {min_median}: {self}",
            self.median_correlation
        );
        assert!(
            (self.duration_ratio() - 1.0).abs() <= duration_tolerance,
            "active duration off by more than {:.1} %: {self}",
            duration_tolerance * 100.0
        );
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "correlation median {:.3} (min {:.3}, {:.0} % of {} speech windows >= {}), SNR {:.1} dB, \
             gain {:+.1} dB ({:.1} -> {:.1} dBFS), lag {:.1} ms, active {:.3} s -> {:.3} s (x{:.3}), \
             length {:.2} s -> {:.2} s",
            self.median_correlation,
            self.min_correlation,
            self.fraction_good * 100.0,
            self.windows,
            self.good_threshold,
            self.snr_db,
            self.gain_db,
            self.reference_rms_db,
            self.recording_rms_db,
            self.lag_ms(),
            self.reference_active_s,
            self.recording_active_s,
            self.duration_ratio(),
            self.reference_len_s,
            self.recording_len_s,
        )
    }
}

/// Compares a recording with its source using [`CompareOptions::default`].
pub fn compare(reference: &[f32], recording: &[f32]) -> Comparison {
    compare_with(reference, recording, &CompareOptions::default())
}

/// Loads both WAVs (panicking with the reason if unreadable) and compares them.
pub fn compare_files(reference: impl AsRef<Path>, recording: impl AsRef<Path>) -> Comparison {
    compare(&load_wav(reference), &load_wav(recording))
}

/// Compares a recording with its source: alignment, per-window correlation, SNR, levels, durations.
pub fn compare_with(reference: &[f32], recording: &[f32], opt: &CompareOptions) -> Comparison {
    let lag = find_lag(reference, recording);
    // The recording aligned to the source: aligned[n] = recording[n + lag], zero where it has nothing.
    let aligned: Vec<f32> = (0..reference.len())
        .map(|n| {
            let j = n as isize + lag;
            if j >= 0 && (j as usize) < recording.len() {
                recording[j as usize]
            } else {
                0.0
            }
        })
        .collect();

    let win = (RATE * opt.window_ms / 1000) as usize;
    let windows: Vec<(f32, usize)> = reference
        .chunks_exact(win)
        .enumerate()
        .map(|(i, w)| (rms(w), i))
        .collect();
    let loudest = windows.iter().fold(0.0f32, |m, (r, _)| m.max(*r));
    let mut corrs: Vec<f32> = windows
        .iter()
        .filter(|(r, _)| loudest > 0.0 && *r >= loudest * opt.speech_rel_rms)
        .map(|(_, i)| {
            let source = &reference[i * win..(i + 1) * win];
            if opt.window_search_ms == 0 {
                pearson(source, &aligned[i * win..(i + 1) * win])
            } else {
                let search = (RATE * opt.window_search_ms / 1000) as isize;
                best_local_pearson(source, recording, (i * win) as isize + lag, search)
            }
        })
        .collect();
    corrs.sort_by(|a, b| a.total_cmp(b));
    let median = match corrs.len() {
        0 => 0.0,
        n if n % 2 == 1 => corrs[n / 2],
        n => (corrs[n / 2 - 1] + corrs[n / 2]) / 2.0,
    };
    let good = corrs.iter().filter(|c| **c >= opt.good_correlation).count();

    // Best gain g for aligned ~ g * reference; what remains is noise.
    let (mut rr, mut ra) = (0.0f64, 0.0f64);
    for (r, a) in reference.iter().zip(&aligned) {
        rr += (*r as f64) * (*r as f64);
        ra += (*r as f64) * (*a as f64);
    }
    let g = if rr > 0.0 { ra / rr } else { 0.0 };
    let noise: f64 = reference
        .iter()
        .zip(&aligned)
        .map(|(r, a)| {
            let e = *a as f64 - g * *r as f64;
            e * e
        })
        .sum();
    let signal = g * g * rr;
    let snr_db = if noise > 0.0 && signal > 0.0 {
        (10.0 * (signal / noise).log10()) as f32
    } else if signal > 0.0 {
        200.0
    } else {
        -200.0
    };

    Comparison {
        lag_samples: lag,
        windows: corrs.len(),
        median_correlation: median,
        min_correlation: corrs.first().copied().unwrap_or(0.0),
        fraction_good: if corrs.is_empty() {
            0.0
        } else {
            good as f32 / corrs.len() as f32
        },
        good_threshold: opt.good_correlation,
        snr_db,
        gain_db: db(g.abs() as f32),
        reference_rms_db: db(rms(reference)),
        recording_rms_db: db(rms(&aligned)),
        reference_active_s: active_seconds(reference, opt.active_rel_threshold),
        recording_active_s: active_seconds(recording, opt.active_rel_threshold),
        reference_len_s: reference.len() as f32 / RATE as f32,
        recording_len_s: recording.len() as f32 / RATE as f32,
    }
}

/// The best correlation of `source` with `recording[start + d ..]` for |d| <= `search`: the FFT
/// cross-correlation peak over that stretch (and d = 0), each refined by a few samples.
fn best_local_pearson(source: &[f32], recording: &[f32], start: isize, search: isize) -> f32 {
    let at = |d: isize| {
        let s = start + d;
        if s < 0 || s as usize + source.len() > recording.len() {
            return -1.0;
        }
        pearson(source, &recording[s as usize..s as usize + source.len()])
    };
    let lo = (start - search).max(0);
    let hi = (start + search + source.len() as isize).min(recording.len() as isize);
    let mut candidates = vec![0];
    if hi - lo >= source.len() as isize {
        let peak = find_lag(source, &recording[lo as usize..hi as usize]) + lo - start;
        candidates.push(peak.clamp(-search, search));
    }
    candidates
        .into_iter()
        .flat_map(|d| d - 2..=d + 2)
        .map(at)
        .fold(-1.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::fixture;

    /// Deterministic white noise (no rand dependency needed for a test signal).
    fn noise(n: usize, seed: u64, amp: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
            })
            .collect()
    }

    #[test]
    fn window_search_follows_a_time_stretched_copy_but_not_noise() {
        let src = load_wav(fixture("audio/speech.wav"));
        // 10 ms dropped every 300 ms, as a jitter buffer that accelerates does.
        let mut rec = vec![0.0; 4_800];
        for chunk in src.chunks(14_400) {
            rec.extend_from_slice(&chunk[chunk.len().min(480)..]);
        }
        let opt = CompareOptions {
            window_search_ms: 80,
            ..CompareOptions::default()
        };
        let local = compare_with(&src, &rec, &opt);
        assert!(local.median_correlation > 0.95, "{local}");
        let global = compare(&src, &rec);
        assert!(
            global.median_correlation < local.median_correlation,
            "{global}"
        );
        let hiss = compare_with(&src, &noise(src.len() + 9_600, 7, 0.1), &opt);
        assert!(hiss.median_correlation < 0.5, "{hiss}");
    }

    #[test]
    fn delayed_attenuated_copy_correlates_with_the_right_lag() {
        let src = load_wav(fixture("audio/speech.wav"));
        let delay = 12_345;
        let mut rec = vec![0.0; delay];
        rec.extend(src.iter().map(|v| v * 0.5));
        rec.extend(vec![0.0; 9_000]);
        let hiss = noise(rec.len(), 7, 0.002);
        for (r, n) in rec.iter_mut().zip(hiss) {
            *r += n;
        }
        let c = compare(&src, &rec);
        assert_eq!(c.lag_samples, delay as isize, "{c}");
        assert!(c.median_correlation > 0.99, "{c}");
        assert!(c.fraction_good > 0.95, "{c}");
        assert!((c.gain_db + 6.02).abs() < 0.2, "{c}");
        assert!(c.snr_db > 20.0, "{c}");
        c.assert_matches(0.9, 0.05);
        // the Display names every figure an assertion message needs
        let text = c.to_string();
        for part in ["correlation median", "SNR", "lag 257.2 ms", "active"] {
            assert!(text.contains(part), "{text}");
        }
    }

    #[test]
    fn recording_that_starts_early_gives_a_negative_lag() {
        let src = load_wav(fixture("audio/speech.wav"));
        let rec = src[4_800..].to_vec();
        let c = compare(&src, &rec);
        assert_eq!(c.lag_samples, -4_800, "{c}");
        assert!(c.median_correlation > 0.99, "{c}");
    }

    #[test]
    fn unrelated_signals_do_not_correlate() {
        let src = load_wav(fixture("audio/speech.wav"));
        let other = load_wav(fixture("audio/speech2.wav"));
        let c = compare(&src, &other);
        assert!(c.median_correlation < 0.5, "{c}");
        assert!(c.fraction_good < 0.1, "{c}");
        let n = noise(src.len(), 3, 0.1);
        let c = compare(&src, &n);
        assert!(c.median_correlation < 0.3, "{c}");
        let silent = vec![0.0; src.len()];
        let c = compare(&src, &silent);
        assert_eq!(c.median_correlation, 0.0, "{c}");
        assert!(
            std::panic::catch_unwind(|| c.assert_matches(0.9, 0.05)).is_err(),
            "silence must not pass"
        );
    }

    #[test]
    fn wav_round_trip_and_rate_check() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wav");
        let x: Vec<f32> = (0..4800).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        write_wav(&p, &x).unwrap();
        let y = read_wav(&p).unwrap();
        assert_eq!(y.len(), x.len());
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-4));

        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let q = dir.path().join("16k.wav");
        hound::WavWriter::create(&q, spec)
            .unwrap()
            .finalize()
            .unwrap();
        let e = read_wav(&q).unwrap_err();
        assert!(e.0.contains("16000"), "{e}");
    }

    #[test]
    fn fixtures_have_the_documented_shape() {
        for (name, len) in [("audio/speech.wav", 3.85), ("audio/speech2.wav", 3.38)] {
            let r = hound::WavReader::open(fixture(name)).unwrap();
            let s = r.spec();
            assert_eq!(
                (s.channels, s.sample_rate, s.bits_per_sample),
                (1, RATE, 16)
            );
            let x = load_wav(fixture(name));
            assert!((x.len() as f32 / RATE as f32 - len).abs() < 0.01, "{name}");
            // 200 ms of silence at both ends
            assert!(x[..9_000].iter().all(|v| *v == 0.0), "{name} start");
            assert!(x[x.len() - 9_000..].iter().all(|v| *v == 0.0), "{name} end");
        }
    }
}
