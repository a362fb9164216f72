//! Closed sets of named values (`--pooling cls`, `"decay": "cosine"`): one spelling for flags,
//! files and messages, and each value's doc comment as its help, without tying the library to
//! a command-line parser (the CLI builds its flags' possible values from [`Choice`]).

use crate::error::{Error, Result};

/// A value out of a closed set of names.
pub trait Choice: Copy + Sized + 'static {
    /// Every value, in the order help lists them.
    const ALL: &'static [Self];
    /// What a value is called in an error (`"pooling"`: `unknown pooling "x"; ...`).
    const WHAT: &'static str;

    /// The value's name in flags, files and messages.
    fn name(self) -> &'static str;

    /// The value's doc comment as written, lines joined by `\n` (empty when it has none).
    fn doc(self) -> &'static str {
        ""
    }

    /// One line of help: the doc comment's first paragraph, its lines joined, without a
    /// closing period (as clap shows a doc comment); `None` when there is no doc comment.
    fn help(self) -> Option<String> {
        let first_paragraph: Vec<&str> =
            self.doc().lines().map(str::trim).skip_while(|l| l.is_empty()).take_while(|l| !l.is_empty()).collect();
        let mut help = first_paragraph.join(" ");
        if help.ends_with('.') && !help.ends_with("..") {
            help.pop();
        }
        (!help.is_empty()).then_some(help)
    }

    /// Every value's name, in [`Choice::ALL`]'s order.
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|v| v.name()).collect()
    }

    /// The value named exactly `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }
}

/// The value named `s` in any case; the error names the choices.
pub fn parse<T: Choice>(s: &str) -> Result<T> {
    T::ALL.iter().copied().find(|v| v.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
        Error::Config(format!("unknown {} {:?}; expected one of: {}", T::WHAT, s.to_ascii_lowercase(), T::names().join(", ")))
    })
}

/// Declares an enum of named values and implements [`Choice`], `FromStr` ([`parse`]) and
/// `Display` (the name) for it. `pub enum Pooling: "pooling"` names what an error calls a
/// value; each variant is followed by its name (`Cls => "cls"`), and its doc comment becomes
/// its help. Attributes on the enum (derives, serde) are kept as written; the enum must be
/// `Copy`.
#[macro_export]
macro_rules! choice_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $what:literal {
            $( $(#[doc = $doc:literal])* $variant:ident => $value:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl $crate::choice::Choice for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            const WHAT: &'static str = $what;
            fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)+
                }
            }
            fn doc(self) -> &'static str {
                match self {
                    $($name::$variant => concat!($($doc, "\n",)* ""),)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                $crate::choice::parse(s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad($crate::choice::Choice::name(*self))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    choice_enum! {
        /// A test set.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Shade: "shade" {
            /// Light, as in
            /// daylight.
            Light => "light",
            Dark => "dark",
            /// First paragraph.
            ///
            /// Second paragraph.
            PitchBlack => "pitch_black",
        }
    }

    #[test]
    fn names_parse_in_any_case_and_print_as_written() {
        assert_eq!(Shade::names(), ["light", "dark", "pitch_black"]);
        assert_eq!("PITCH_black".parse::<Shade>().unwrap(), Shade::PitchBlack);
        assert_eq!(Shade::from_name("Dark"), None, "from_name is exact");
        assert_eq!(format!("[{:<6}]", Shade::Dark), "[dark  ]");
    }

    #[test]
    fn a_bad_name_is_refused_naming_the_choices() {
        let e = "Dusk".parse::<Shade>().unwrap_err().to_string();
        assert_eq!(e, r#"invalid configuration: unknown shade "dusk"; expected one of: light, dark, pitch_black"#);
    }

    #[test]
    fn help_is_the_first_paragraph_of_the_doc_comment_on_one_line() {
        assert_eq!(Shade::Light.help().as_deref(), Some("Light, as in daylight"));
        assert_eq!(Shade::Dark.help(), None);
        assert_eq!(Shade::PitchBlack.help().as_deref(), Some("First paragraph"));
    }
}
