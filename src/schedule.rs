//! Schedules: a factor of the step t that multiplies one float hyperparameter of a group.
//!
//! t is the applied step being taken (1, 2, …): a step skipped for non-finite gradients does
//! not advance it, so the factor follows the steps that changed θ. The factor is computed in
//! f64 and multiplies the hyperparameter before the host derives the step's scalars from it,
//! so a scheduled step is exactly the step of the config with that value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optim::OptimizerConfig;

/// The kinds of schedule, with their CLI spelling `KIND[:k=v,...]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// 1.
    Constant,
    /// `linear:warmup=W`: min(1, t / W), W ≥ 1.
    Linear { warmup: u64 },
    /// `cosine:warmup=W,total=T,final=F`: t / W for t ≤ W; then with
    /// p = min(1, (t − W) / (T − W)), F + (1 − F)·(1 + cos πp) / 2. T > W, F ∈ [0, 1].
    Cosine {
        warmup: u64,
        total: u64,
        #[serde(rename = "final")]
        final_factor: f64,
    },
    /// `step:every=K,gamma=G`: G^⌊t / K⌋, K ≥ 1, G ≥ 0.
    Step { every: u64, gamma: f64 },
}

const KINDS: &str =
    "constant, linear:warmup=W, cosine:warmup=W,total=T,final=F, step:every=K,gamma=G";

fn invalid(field: &'static str, value: impl fmt::Debug, allowed: &'static str) -> Error {
    Error::config("schedule", field, value, allowed)
}

impl Schedule {
    /// The factor at step `t` (1-based).
    pub fn factor(&self, t: u64) -> f64 {
        let t = t as f64;
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Linear { warmup } => (t / warmup as f64).min(1.0),
            Schedule::Cosine {
                warmup,
                total,
                final_factor,
            } => {
                let w = warmup as f64;
                if t <= w {
                    t / w
                } else {
                    let p = ((t - w) / (total as f64 - w)).min(1.0);
                    final_factor
                        + (1.0 - final_factor) * (1.0 + (std::f64::consts::PI * p).cos()) / 2.0
                }
            }
            Schedule::Step { every, gamma } => gamma.powf((t as u64 / every) as f64),
        }
    }

    /// Checks every parameter against its range.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Linear { warmup } if warmup == 0 => Err(invalid(
                "warmup",
                warmup,
                "warmup >= 1 for linear (the factor is t / warmup)",
            )),
            Schedule::Linear { .. } => Ok(()),
            Schedule::Cosine { warmup, total, .. } if total <= warmup => {
                Err(invalid("total", total, "total > warmup"))
            }
            Schedule::Cosine { final_factor, .. } if !(0.0..=1.0).contains(&final_factor) => {
                Err(invalid("final", final_factor, "0 <= final <= 1"))
            }
            Schedule::Cosine { .. } => Ok(()),
            Schedule::Step { every, .. } if every == 0 => {
                Err(invalid("every", every, "every >= 1"))
            }
            Schedule::Step { gamma, .. } if !(gamma.is_finite() && gamma >= 0.0) => {
                Err(invalid("gamma", gamma, "a finite gamma >= 0"))
            }
            Schedule::Step { .. } => Ok(()),
        }
    }
}

/// Parses a whole number of steps.
fn steps(key: &'static str, value: &str) -> Result<u64> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| invalid(key, value, "a whole number of steps >= 0"))
}

/// Parses a finite number.
fn number(key: &'static str, value: &str) -> Result<f64> {
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(invalid(key, value, "a finite number")),
    }
}

/// `KIND[:k=v,...]`, validated.
impl FromStr for Schedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (kind, params) = s.split_once(':').unwrap_or((s, ""));
        let mut pairs = Vec::new();
        for pair in params.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| Error::Unknown {
                what: "schedule parameter",
                name: pair.to_string(),
                known: "only k=v forms, e.g. warmup=10".into(),
            })?;
            pairs.push((k.trim(), v));
        }
        let keys: &[&'static str] = match kind {
            "constant" => &[],
            "linear" => &["warmup"],
            "cosine" => &["warmup", "total", "final"],
            "step" => &["every", "gamma"],
            _ => {
                return Err(Error::Unknown {
                    what: "schedule kind",
                    name: kind.to_string(),
                    known: KINDS.into(),
                })
            }
        };
        let mut values: Vec<Option<&str>> = vec![None; keys.len()];
        for (k, v) in pairs {
            let slot = keys
                .iter()
                .position(|key| *key == k)
                .ok_or_else(|| Error::Unknown {
                    what: "schedule parameter",
                    name: format!("{kind}:{k}"),
                    known: if keys.is_empty() {
                        format!("none for {kind}")
                    } else {
                        keys.join(", ")
                    },
                })?;
            values[slot] = Some(v);
        }
        let get = |i: usize| {
            values[i].ok_or_else(|| invalid(keys[i], "missing", "required by this kind"))
        };
        let schedule = match kind {
            "constant" => Schedule::Constant,
            "linear" => Schedule::Linear {
                warmup: steps("warmup", get(0)?)?,
            },
            "cosine" => Schedule::Cosine {
                warmup: steps("warmup", get(0)?)?,
                total: steps("total", get(1)?)?,
                final_factor: number("final", get(2)?)?,
            },
            _ => Schedule::Step {
                every: steps("every", get(0)?)?,
                gamma: number("gamma", get(1)?)?,
            },
        };
        schedule.validate()?;
        Ok(schedule)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => write!(f, "constant"),
            Schedule::Linear { warmup } => write!(f, "linear:warmup={warmup}"),
            Schedule::Cosine {
                warmup,
                total,
                final_factor,
            } => write!(
                f,
                "cosine:warmup={warmup},total={total},final={final_factor}"
            ),
            Schedule::Step { every, gamma } => write!(f, "step:every={every},gamma={gamma}"),
        }
    }
}

/// A schedule on one float hyperparameter, by its SPEC name: `HYPER:KIND[:k=v,...]`, e.g.
/// `eta:cosine:warmup=10,total=100,final=0.1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HyperSchedule {
    pub hyper: String,
    pub schedule: Schedule,
}

impl HyperSchedule {
    pub fn new(hyper: &str, schedule: Schedule) -> Result<Self> {
        schedule.validate()?;
        Ok(HyperSchedule {
            hyper: hyper.to_string(),
            schedule,
        })
    }

    /// Checks that `config` has a float hyperparameter of this name that can be set.
    pub fn check_applies_to(&self, config: &OptimizerConfig) -> Result<()> {
        let floats = float_fields(config);
        let value = floats
            .iter()
            .find(|(name, _)| *name == self.hyper)
            .ok_or_else(|| Error::Unknown {
                what: "float hyperparameter to schedule",
                name: self.hyper.clone(),
                known: format!(
                    "{} of {}",
                    floats
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    config.name()
                ),
            })?
            .1;
        // The setter must take it back, or the schedule could not apply.
        let mut probe = config.clone();
        probe.as_dyn_mut().set(&self.hyper, &value.to_string())
    }
}

impl FromStr for HyperSchedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (hyper, schedule) = s.split_once(':').ok_or_else(|| Error::Unknown {
            what: "schedule",
            name: s.to_string(),
            known: format!("HYPER:KIND[:k=v,...] with KIND one of {KINDS}"),
        })?;
        HyperSchedule::new(hyper.trim(), schedule.parse()?)
    }
}

impl fmt::Display for HyperSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.hyper, self.schedule)
    }
}

/// The float hyperparameters of a config by name, from its serde form (the optimizer's own
/// field names, which are the SPEC names `set` takes).
fn float_fields(config: &OptimizerConfig) -> Vec<(String, f64)> {
    let value = serde_json::to_value(config).expect("a config serialises");
    let mut object = value.as_object().cloned().unwrap_or_default();
    // The enum's tag wraps the optimizer's own fields.
    if let [(_, serde_json::Value::Object(inner))] = &object.iter().collect::<Vec<_>>()[..] {
        object = (*inner).clone();
    }
    object
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::Number(n) => n.as_f64().map(|x| (k, x)),
            _ => None,
        })
        .collect()
}

/// `config` with each scheduled hyperparameter multiplied by its factor at step `t`; the
/// config itself when there is no schedule. Schedules are checked when they are set
/// ([`HyperSchedule::check_applies_to`]), so applying one cannot fail.
pub fn config_at<'a>(
    config: &'a OptimizerConfig,
    schedules: &[HyperSchedule],
    t: u64,
) -> std::borrow::Cow<'a, OptimizerConfig> {
    if schedules.is_empty() {
        return std::borrow::Cow::Borrowed(config);
    }
    let mut scheduled = config.clone();
    let floats = float_fields(config);
    for s in schedules {
        if let Some((_, base)) = floats.iter().find(|(n, _)| *n == s.hyper) {
            // `{}` of an f64 reads back to the same f64, so the product arrives unrounded.
            let value = base * s.schedule.factor(t);
            scheduled
                .as_dyn_mut()
                .set(&s.hyper, &value.to_string())
                .expect("checked when the schedule was set");
        }
    }
    std::borrow::Cow::Owned(scheduled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_follow_the_definitions() {
        let cosine: Schedule = "cosine:warmup=10,total=110,final=0.1".parse().unwrap();
        assert_eq!(cosine.factor(5), 0.5);
        assert_eq!(cosine.factor(10), 1.0);
        // Halfway through the decay: F + (1 − F)/2.
        assert!((cosine.factor(60) - 0.55).abs() < 1e-15);
        assert_eq!(cosine.factor(110), 0.1);
        assert_eq!(cosine.factor(1000), 0.1);
        let linear: Schedule = "linear:warmup=4".parse().unwrap();
        assert_eq!(
            [1, 2, 4, 9].map(|t| linear.factor(t)),
            [0.25, 0.5, 1.0, 1.0]
        );
        let step: Schedule = "step:every=3,gamma=0.5".parse().unwrap();
        assert_eq!(
            [1, 2, 3, 5, 6].map(|t| step.factor(t)),
            [1.0, 1.0, 0.5, 0.5, 0.25]
        );
        assert_eq!("constant".parse::<Schedule>().unwrap().factor(7), 1.0);
    }

    #[test]
    fn bad_spellings_are_refused_with_the_reason() {
        for (bad, says) in [
            ("linear:warmup=0", "warmup"),
            ("cosine:warmup=10,total=10,final=0.1", "total > warmup"),
            ("cosine:warmup=1,total=10,final=1.5", "0 <= final <= 1"),
            ("cosine:warmup=1,total=10", "final"),
            ("step:every=0,gamma=0.5", "every"),
            ("step:every=2,gamma=-1", "gamma"),
            ("step:every=2,gamma=inf", "finite"),
            ("linear:warmup=-3", "whole number"),
            ("linear:warmup=nan", "whole number"),
            ("exp:rate=2", "unknown schedule kind `exp`"),
            (
                "linear:length=3",
                "unknown schedule parameter `linear:length`",
            ),
        ] {
            let error = bad.parse::<Schedule>().unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn spelling_round_trips_through_display_and_serde() {
        for s in [
            "eta:cosine:warmup=10,total=100,final=0.1",
            "lr:linear:warmup=5",
            "lr:step:every=30,gamma=0.1",
            "weight_decay:constant",
        ] {
            let parsed: HyperSchedule = s.parse().unwrap();
            assert_eq!(parsed.to_string(), s);
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(
                serde_json::from_str::<HyperSchedule>(&json).unwrap(),
                parsed
            );
        }
    }

    #[test]
    fn a_schedule_needs_a_float_hyperparameter_of_the_optimizer() {
        let bayes = OptimizerConfig::default_for("bayes").unwrap();
        let eta: HyperSchedule = "eta:linear:warmup=2".parse().unwrap();
        eta.check_applies_to(&bayes).unwrap();
        for bad in [
            "lr:constant",
            "bias_correction:constant",
            "sigma_init:constant",
        ] {
            let s: HyperSchedule = bad.parse().unwrap();
            let error = s.check_applies_to(&bayes).unwrap_err().to_string();
            assert!(error.contains("eta"), "{bad}: {error}");
        }
        let OptimizerConfig::Bayes(at1) = config_at(&bayes, &[eta], 1).into_owned() else {
            unreachable!()
        };
        assert_eq!(at1.eta, 1e-3 * 0.5);
    }
}
