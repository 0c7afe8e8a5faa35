//! Writes a synthetic 3 s talk burst (with a 100 ms gap) as Ogg Opus, for
//! checking the recorder with outside tools:
//! `cargo run -p media --example record_ogg -- /tmp/burst.ogg && opusinfo /tmp/burst.ogg`.

use media::Channels;
use media::ogg_writer::{OggOpusHeader, OggOpusWriter};
use media::opus::{Application, Encoder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "burst.ogg".into());
    let mut enc = Encoder::new(48_000, Channels::Mono, Application::Voip)?;
    enc.set_bitrate(24_000)?;
    let header = OggOpusHeader {
        pre_skip: enc.lookahead()? as u16,
        comments: vec!["PARTY=ptt:42".into(), "GROUP=North".into()],
        ..OggOpusHeader::default()
    };
    let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut w = OggOpusWriter::new(file, 0x5EED, &header)?;
    let speech = media::signal::speechlike(48_000, 3.0);
    for (i, frame) in speech.chunks_exact(960).enumerate() {
        if (70..75).contains(&i) {
            w.write_gap(960)?; // five lost packets
        } else {
            w.write_packet(&enc.encode(frame)?)?;
        }
    }
    let samples = w.samples();
    w.finish()?;
    println!(
        "{path}: {samples} samples ({:.2} s)",
        samples as f64 / 48_000.0
    );
    Ok(())
}
