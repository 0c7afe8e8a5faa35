//! WAV files in and out of the bridge's audio format (48 kHz mono `i16`).

use std::path::Path;

use anyhow::{Context, bail};
use media::Channels;
use media::resample::Resampler;

/// The bridge's internal sample rate.
pub const RATE: u32 = 48_000;

/// Reads a 16-bit PCM WAV as 48 kHz mono, down-mixing and resampling as needed.
pub fn read_mono_48k(path: &Path) -> anyhow::Result<Vec<i16>> {
    let mut reader =
        hound::WavReader::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        bail!(
            "{}: only 16-bit PCM WAV is supported (got {spec:?})",
            path.display()
        );
    }
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: corrupt WAV data", path.display()))?;
    let ch = usize::from(spec.channels.max(1));
    let mono: Vec<i16> = samples
        .chunks(ch)
        .map(|f| (f.iter().map(|&s| i32::from(s)).sum::<i32>() / ch as i32) as i16)
        .collect();
    if spec.sample_rate == RATE {
        return Ok(mono);
    }
    let mut rs = Resampler::new(spec.sample_rate, RATE, Channels::Mono).with_context(|| {
        format!(
            "{}: cannot resample from {} Hz",
            path.display(),
            spec.sample_rate
        )
    })?;
    let (inp, outp) = (rs.input_len(), rs.output_len());
    let delay = rs.delay();
    let mut out = Vec::with_capacity(mono.len() * RATE as usize / spec.sample_rate as usize + outp);
    let mut frame_out = vec![0i16; outp];
    // Pad so the resampler's delay is flushed, then cut it off the front.
    let mut padded = mono;
    padded.resize(
        padded.len().div_ceil(inp) * inp + inp * (delay / outp + 1),
        0,
    );
    for frame in padded.chunks(inp) {
        let n = rs.process(frame, &mut frame_out)?;
        out.extend_from_slice(&frame_out[..n]);
    }
    Ok(out.split_off(delay.min(out.len())))
}

/// Writes 48 kHz mono `i16` samples as a WAV file.
pub fn write_mono_48k(path: &Path, samples: &[i16]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("cannot create {}", path.display()))?;
    for &s in samples {
        w.write_sample(s)?;
    }
    w.finalize()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_resample() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        let tone: Vec<i16> = (0..4800)
            .map(|i| ((i as f64 * 0.05).sin() * 8000.0) as i16)
            .collect();
        write_mono_48k(&p, &tone).unwrap();
        assert_eq!(read_mono_48k(&p).unwrap(), tone);

        // 16 kHz stereo in: comes back at 48 kHz mono with three times the samples.
        let p16 = dir.path().join("b.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p16, spec).unwrap();
        for i in 0..1600 {
            let s = ((i as f64 * 0.1).sin() * 8000.0) as i16;
            w.write_sample(s).unwrap();
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let up = read_mono_48k(&p16).unwrap();
        assert!(
            (up.len() as i64 - 4800).abs() <= 960,
            "{} samples",
            up.len()
        );
        let rms = (up.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / up.len() as f64).sqrt();
        assert!(rms > 4000.0, "level kept: rms {rms}");
    }

    #[test]
    fn non_wav_input_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wav");
        std::fs::write(&p, b"not a wav").unwrap();
        assert!(read_mono_48k(&p).unwrap_err().to_string().contains("x.wav"));
    }
}
