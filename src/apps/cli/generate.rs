//! `replora generate`: a prompt's continuation streamed to stdout, from a pre-trained decoder or
//! a multiple-choice run's adapted one; with `--image`, a vqa run's answer to the prompt as a
//! question about the image.

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;

use crate::adapters::Deltas;
use crate::adapters::base_weight::Quantize;
use crate::error::{Error, Result};
use crate::generate::{Sampling, generate, generate_after};
use crate::models::decoder::Decoder;
use crate::tasks::{MultipleChoice, Role, TaskKind, Vqa};

/// Which decoder continues the prompt.
pub enum DecoderSource<'a> {
    /// A pre-trained decoder (`--model`) with its frozen weights held as `--quantize` says.
    Model { name: &'a str, quantize: Quantize },
    /// A multiple-choice run's adapted decoder, or a vqa run's (`--run`).
    Run(&'a Path),
}

/// Streams the continuation of `prompt`, computed on `device`, to stdout.
pub fn generate_cli(
    source: DecoderSource,
    image: Option<&Path>,
    prompt: &str,
    chat: bool,
    mut sampling: Sampling,
    device: &Device,
) -> Result<()> {
    sampling.validate()?;
    let run = match source {
        DecoderSource::Run(dir) => Some(dir),
        DecoderSource::Model { .. } => None,
    };
    if let Some(image) = image {
        let run = run.ok_or_else(|| Error::Config("--image needs --run: a vqa run answers questions about images".into()))?;
        return answer_about_image(run, image, prompt, sampling, device);
    }
    let (decoder, deltas) = match source {
        DecoderSource::Run(dir) => {
            let kind = crate::run::kind_of(dir)?;
            if kind == TaskKind::Vqa {
                let d = dir.display();
                return Err(Error::Config(format!("{d} is a vqa run: give the image the question is about with --image PATH")));
            }
            if kind != TaskKind::MultipleChoice {
                let d = dir.display();
                return Err(Error::State(format!("{d} is a {kind} run, not a decoder's: use `replora predict --run {d}`")));
            }
            let (task, model) = crate::run::open::<MultipleChoice>(dir, device, &[Role::Model])?;
            let deltas = model.decoder.deltas();
            (task.decoder, deltas)
        }
        DecoderSource::Model { name, quantize } => (Decoder::open_as(name, quantize, device)?, Deltas::none()),
    };
    let text = if chat { decoder.chat_prompt(prompt)? } else { prompt.to_string() };
    let ids = decoder.encode_prompt(&text)?;
    if ids.is_empty() {
        return Err(Error::Config("the prompt is empty".into()));
    }
    let window = decoder.model.config.max_position_embeddings;
    if ids.len() >= window {
        return Err(Error::Config(format!(
            "the prompt has {} tokens but the model's context window is {window} (max_position_embeddings), with room needed for new tokens; shorten the prompt",
            ids.len()
        )));
    }
    if ids.len() + sampling.max_new_tokens > window {
        eprintln!("warning: the context window ({window} tokens) ends generation after {} new tokens", window - ids.len());
    }
    sampling.stop = vec![decoder.eos_id()?];
    let started = Instant::now();
    let out = generate(&decoder.model, &deltas, &ids, &sampling, device, &mut stream_to_stdout(&decoder));
    println!();
    report(ids.len(), out.len(), started);
    Ok(())
}

/// A vqa run's greedy (or sampled) answer to `question` about `image`, streamed to stdout; it
/// stops at the end token or a new line.
fn answer_about_image(run: &Path, image: &Path, question: &str, mut sampling: Sampling, device: &Device) -> Result<()> {
    if crate::run::kind_of(run)? != TaskKind::Vqa {
        return Err(Error::Config(format!("--image is for vqa runs; {} is not one", run.display())));
    }
    let (task, model) = crate::run::open::<Vqa>(run, device, &[Role::Model])?;
    let embeddings = task.question_embeddings(&model, image, question, device)?;
    let prompt = embeddings.dims()[1];
    sampling.stop = vec![task.decoder.eos_id()?];
    sampling.stop.extend(task.decoder.encode("\n")?.first());
    let started = Instant::now();
    let deltas = model.decoder.deltas();
    let out = generate_after(&model.decoder.model, &deltas, embeddings, &sampling, device, &mut stream_to_stdout(&task.decoder));
    println!();
    report(prompt, out.len(), started);
    Ok(())
}

/// Prints each new token's text as it comes. The whole continuation is decoded each time: a
/// multi-byte character may span tokens.
fn stream_to_stdout(decoder: &Decoder) -> impl FnMut(u32) + '_ {
    use std::io::Write;
    let (mut produced, mut shown) = (vec![], String::new());
    move |id| {
        produced.push(id);
        if let Ok(text) = decoder.decode(&produced) {
            if let Some(new) = text.strip_prefix(shown.as_str()) {
                let mut stdout = std::io::stdout();
                let _ = write!(stdout, "{new}");
                let _ = stdout.flush();
            }
            shown = text;
        }
    }
}

fn report(prompt: usize, new: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{prompt} prompt + {new} new tokens in {secs:.2} s ({:.1} tokens/s)", new as f64 / secs.max(1e-9));
}
