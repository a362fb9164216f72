//! How a run tunes the pre-trained model: an adapter (with its config), every weight, or only
//! the task's head.

use std::path::Path;

use serde::de::Error as _;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::adapters::{Adaptable, AdapterConfig, AdapterSet, PeftModel};
use crate::error::Result;

/// How the pre-trained model is tuned. A run spec holds it as its `tuning` tag (`adapter`,
/// `full`, `probe`) and, for an adapter, the adapter's config under `adapter`.
#[derive(Clone, Debug, PartialEq)]
pub enum Tuning {
    /// The model frozen, with an adapter of this config.
    Adapter(AdapterConfig),
    /// Full fine-tuning of every weight.
    Full,
    /// A linear probe: the pre-trained model frozen, no adapter, only the task's head trains.
    Probe,
}

/// The `tuning` tag of a run spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Tag {
    Adapter,
    Full,
    Probe,
}

/// The two keys of a run spec that hold its tuning. Specs written before `Tuning` carried its
/// config held a placeholder adapter for full and probe runs too: it is read and ignored.
#[derive(Deserialize)]
struct Fields {
    tuning: Tag,
    adapter: Option<AdapterConfig>,
}

impl Serialize for Tuning {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Tuning", 2)?;
        let tag = match self {
            Tuning::Adapter(_) => Tag::Adapter,
            Tuning::Full => Tag::Full,
            Tuning::Probe => Tag::Probe,
        };
        s.serialize_field("tuning", &tag)?;
        match self {
            Tuning::Adapter(config) => s.serialize_field("adapter", config)?,
            _ => s.skip_field("adapter")?,
        }
        s.end()
    }
}

impl<'de> Deserialize<'de> for Tuning {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let f = Fields::deserialize(deserializer)?;
        Ok(match f.tuning {
            Tag::Adapter => Tuning::Adapter(f.adapter.ok_or_else(|| D::Error::missing_field("adapter"))?),
            Tag::Full => Tuning::Full,
            Tag::Probe => Tuning::Probe,
        })
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning::Adapter(AdapterConfig::default())
    }
}

impl Tuning {
    /// The adapter's config, for an adapter run.
    pub fn adapter(&self) -> Option<&AdapterConfig> {
        match self {
            Tuning::Adapter(config) => Some(config),
            _ => None,
        }
    }

    pub fn adapter_mut(&mut self) -> Option<&mut AdapterConfig> {
        match self {
            Tuning::Adapter(config) => Some(config),
            _ => None,
        }
    }

    /// `lora`, `dora`, `replora`, `adapter`, `prefix` (the adapter's method), `full` or `probe`.
    pub fn name(&self) -> String {
        match self {
            Tuning::Adapter(config) => config.method.to_string(),
            Tuning::Full => "full".into(),
            Tuning::Probe => "probe".into(),
        }
    }

    /// The layers an adapter is limited to (`layers_to_transform`), if any.
    pub fn layers(&self) -> Option<&[usize]> {
        self.adapter().and_then(|a| a.layers_to_transform.as_deref())
    }

    /// Checks the adapter's settings.
    pub fn validate(&self) -> Result<()> {
        self.adapter().map_or(Ok(()), AdapterConfig::validate)
    }

    /// `model` frozen with the adapter injected, or with every weight trainable.
    pub fn wrap<M: Adaptable>(&self, model: M) -> Result<PeftModel<M>> {
        match self {
            Tuning::Adapter(config) => PeftModel::new(model, config),
            // Full fine-tuning trains every weight, so a quantized base is widened to f32 first.
            Tuning::Full => Ok(PeftModel::full_finetune(model.widened())),
            Tuning::Probe => Ok(PeftModel::from_parts(model, AdapterSet::empty())),
        }
    }

    /// A finished run's tuned model around the pre-trained `base`: its adapter (native format,
    /// in `out`'s adapter directory), its fully tuned weights (read by `load_full` from
    /// `out/<full_dir>`), or nothing (a probe).
    pub fn restore<M: Adaptable>(
        &self,
        base: M,
        out: &Path,
        full_dir: &str,
        load_full: impl FnOnce(&Path) -> Result<M>,
    ) -> Result<PeftModel<M>> {
        match self {
            Tuning::Adapter(_) => crate::formats::native::load(base, &out.join(crate::layout::ADAPTER_DIR)),
            Tuning::Full => Ok(PeftModel::full_finetune(load_full(&out.join(full_dir))?)),
            Tuning::Probe => Ok(PeftModel::from_parts(base, AdapterSet::empty())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::Method;

    /// An adapter run's spec holds `tuning` and `adapter`; a full or probe run's only the tag,
    /// and one written with a placeholder adapter reads back without it.
    #[test]
    fn tuning_is_a_tag_with_the_adapter_config_of_adapter_runs_only() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            model: String,
            #[serde(flatten)]
            tuning: Tuning,
            seed: u64,
        }
        let lora = Spec { model: "m".into(), tuning: Tuning::Adapter(AdapterConfig::new(Method::Lora)), seed: 1 };
        let json = serde_json::to_value(&lora).unwrap();
        assert_eq!((&json["tuning"], &json["adapter"]["method"]), (&serde_json::json!("adapter"), &serde_json::json!("lora")));
        assert_eq!(serde_json::from_value::<Spec>(json).unwrap(), lora);
        let full = Spec { tuning: Tuning::Full, ..lora };
        let json = serde_json::to_value(&full).unwrap();
        assert!(json.get("adapter").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<Spec>(json).unwrap(), full);
        let old = serde_json::json!({"model": "m", "tuning": "probe", "adapter": {"method": "lora", "r": 8}, "seed": 1});
        assert_eq!(serde_json::from_value::<Spec>(old).unwrap().tuning, Tuning::Probe);
        for bad in [
            serde_json::json!({"model": "m", "tuning": "adapter", "seed": 1}),
            serde_json::json!({"model": "m", "tuning": "full", "seed": 1, "x": 2}),
        ] {
            let e = serde_json::from_value::<Spec>(bad).unwrap_err().to_string();
            assert!(e.contains("adapter") || e.contains("`x`"), "{e}");
        }
    }
}
