//! `replora generate`: a prompt's continuation streamed to stdout, from a pre-trained decoder or
//! a multiple-choice run's adapted one.

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;

use crate::adapters::Deltas;
use crate::error::{Error, Result};
use crate::generate::{Sampling, generate};
use crate::models::decoder::Decoder;
use crate::tasks::{MultipleChoice, Role, TaskKind};

/// Streams the continuation of `prompt`, computed on `device`, to stdout.
pub fn generate_cli(model: &str, run: Option<&Path>, prompt: &str, chat: bool, mut sampling: Sampling, device: &Device) -> Result<()> {
    use std::io::Write;
    sampling.validate()?;
    let (decoder, deltas) = match run {
        Some(dir) => {
            if crate::run::kind_of(dir)? != TaskKind::MultipleChoice {
                let d = dir.display();
                return Err(Error::State(format!("{d} is a classification run, not a decoder's: use `replora predict --run {d}`")));
            }
            let (task, model) = crate::run::open::<MultipleChoice>(dir, device, &[Role::Model])?;
            let deltas = model.decoder.deltas();
            (task.decoder, deltas)
        }
        None => (Decoder::open(model, device)?, Deltas::none()),
    };
    let text = if chat { decoder.chat_prompt(prompt)? } else { prompt.to_string() };
    let ids = decoder.encode(&text)?;
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
    let mut produced = vec![];
    let mut shown = String::new();
    let mut stdout = std::io::stdout();
    let out = generate(&decoder.model, &deltas, &ids, &sampling, device, &mut |id| {
        // Decode the whole continuation each time: a multi-byte character may span tokens.
        produced.push(id);
        if let Ok(text) = decoder.decode(&produced) {
            if let Some(new) = text.strip_prefix(shown.as_str()) {
                let _ = write!(stdout, "{new}");
                let _ = stdout.flush();
            }
            shown = text;
        }
    });
    println!();
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{} prompt + {} new tokens in {secs:.2} s ({:.1} tokens/s)", ids.len(), out.len(), out.len() as f64 / secs.max(1e-9));
    Ok(())
}
