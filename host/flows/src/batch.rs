//! What happened to each record of a batch, shared by pipelines and syncs:
//! transforms that isolate a poison record instead of failing its batch,
//! and a sink's outcomes matched to the records it was given, where a
//! record the sink named no outcome for is never counted written.

use crate::bindings::{ConnectorError, Message, WriteOutcome};
use crate::transform::Transform;
use std::collections::HashMap;
use switchyard_runtime::Runtime;

/// A batch after the transforms.
#[derive(Debug, Default)]
pub(crate) struct Transformed {
    /// What goes to the sink.
    pub messages: Vec<Message>,
    /// For each of `messages`, the input it came from; `None` when a
    /// transform renamed it beyond recognition (see [`owners_by_id`]).
    pub owners: Vec<Option<usize>>,
    /// For each input: the error that kept it from the sink, if any.
    pub failed: Vec<Option<ConnectorError>>,
    /// The inputs as they came, when any failed (to dead-letter them);
    /// empty otherwise.
    pub originals: Vec<Message>,
}

/// Runs `steps` over `inputs` as one batch. If that fails and the batch
/// has more than one record, runs each record alone, so only the records
/// that fail on their own carry the error and the rest go on.
pub(crate) async fn transform(
    runtime: &Runtime,
    steps: &[Transform],
    inputs: Vec<Message>,
) -> Transformed {
    let count = inputs.len();
    if steps.is_empty() {
        return Transformed {
            owners: (0..count).map(Some).collect(),
            messages: inputs,
            failed: vec![None; count],
            originals: Vec::new(),
        };
    }
    let ids: Vec<String> = inputs.iter().map(|m| m.id.clone()).collect();
    // The copy is what isolating a poison record (and dead-lettering it)
    // needs; batches that succeed drop it.
    let originals = inputs.clone();
    let error = match apply(runtime, steps, inputs).await {
        Ok(messages) => {
            return Transformed {
                owners: owners_by_id(&ids, &messages),
                messages,
                failed: vec![None; count],
                originals: Vec::new(),
            };
        }
        Err(error) => error,
    };
    if count == 1 {
        return Transformed {
            failed: vec![Some(error)],
            originals,
            ..Transformed::default()
        };
    }
    let mut out = Transformed {
        failed: vec![None; count],
        ..Transformed::default()
    };
    for (index, message) in originals.iter().enumerate() {
        match apply(runtime, steps, vec![message.clone()]).await {
            Ok(messages) => {
                out.owners
                    .extend(std::iter::repeat_n(Some(index), messages.len()));
                out.messages.extend(messages);
            }
            Err(error) => out.failed[index] = Some(error),
        }
    }
    if out.failed.iter().any(Option::is_some) {
        out.originals = originals;
    }
    out
}

async fn apply(
    runtime: &Runtime,
    steps: &[Transform],
    mut messages: Vec<Message>,
) -> Result<Vec<Message>, ConnectorError> {
    for step in steps {
        messages = step.apply(runtime, messages).await?;
    }
    Ok(messages)
}

/// Which input each output came from, by id: the same id, or the id with
/// `#n` suffixes a splitting transform added. `None` for an id no input
/// had (a transform renamed it).
pub(crate) fn owners_by_id(input_ids: &[String], outputs: &[Message]) -> Vec<Option<usize>> {
    let by_id: HashMap<&str, usize> = (input_ids.iter().enumerate())
        .map(|(index, id)| (id.as_str(), index))
        .collect();
    outputs
        .iter()
        .map(|m| {
            let mut id = m.id.as_str();
            loop {
                if let Some(index) = by_id.get(id) {
                    return Some(*index);
                }
                id = id.rsplit_once('#')?.0;
            }
        })
        .collect()
}

/// The sink's outcome for each of `written` (by id, in order): the first
/// outcome naming it, or a retryable error when none does. Also the ids
/// the sink answered for that it was not given (ignored).
pub(crate) fn match_outcomes(
    written: &[String],
    outcomes: Vec<WriteOutcome>,
) -> (Vec<Result<(), ConnectorError>>, Vec<String>) {
    let mut by_id: HashMap<String, Result<(), ConnectorError>> =
        HashMap::with_capacity(outcomes.len());
    for o in outcomes {
        by_id.entry(o.id).or_insert(o.outcome);
    }
    let results = written
        .iter()
        .map(|id| {
            by_id.get(id).cloned().unwrap_or_else(|| {
                Err(ConnectorError::Retryable(format!(
                    "the sink returned no outcome for message `{id}`; it is delivered again"
                )))
            })
        })
        .collect();
    let asked: std::collections::HashSet<&String> = written.iter().collect();
    let mut unknown: Vec<String> = by_id.into_keys().filter(|id| !asked.contains(id)).collect();
    unknown.sort();
    (results, unknown)
}

/// Each input's result: the first error among the outputs it owns, else
/// success (an input with no outputs was filtered out). Outputs nobody
/// owns decide for the inputs that own none: a record a transform renamed
/// succeeds only if every renamed one did.
pub(crate) fn per_input(
    failed: Vec<Option<ConnectorError>>,
    owners: &[Option<usize>],
    results: &[Result<(), ConnectorError>],
) -> Vec<Result<(), ConnectorError>> {
    let mut owned = vec![false; failed.len()];
    let mut per: Vec<Result<(), ConnectorError>> =
        failed.into_iter().map(|f| f.map_or(Ok(()), Err)).collect();
    let mut orphans: Option<Result<(), ConnectorError>> = None;
    for (owner, result) in owners.iter().zip(results) {
        let slot = match owner {
            Some(index) => {
                owned[*index] = true;
                &mut per[*index]
            }
            None => orphans.get_or_insert(Ok(())),
        };
        if slot.is_ok() && result.is_err() {
            *slot = result.clone();
        }
    }
    if let Some(orphans) = orphans {
        for (index, result) in per.iter_mut().enumerate() {
            if !owned[index] && result.is_ok() {
                *result = orphans.clone();
            }
        }
    }
    per
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> Message {
        Message {
            id: id.into(),
            stream: "s".into(),
            key: None,
            headers: Vec::new(),
            payload: b"{}".to_vec(),
            timestamp_ms: 0,
        }
    }

    fn outcome(id: &str, ok: bool) -> WriteOutcome {
        WriteOutcome {
            id: id.into(),
            outcome: if ok {
                Ok(())
            } else {
                Err(ConnectorError::Permanent("no".into()))
            },
        }
    }

    #[test]
    fn a_message_without_an_outcome_is_retried_and_strangers_are_ignored() {
        let written: Vec<String> = ["a", "b", "c"].map(String::from).into();
        let (results, unknown) = match_outcomes(
            &written,
            vec![
                outcome("a", true),
                outcome("zz", true),
                outcome("c", false),
                outcome("a", false),
            ],
        );
        assert!(results[0].is_ok(), "the first outcome for an id counts");
        assert!(matches!(&results[1], Err(ConnectorError::Retryable(m)) if m.contains("`b`")));
        assert!(matches!(results[2], Err(ConnectorError::Permanent(_))));
        assert_eq!(unknown, ["zz"]);
    }

    #[test]
    fn outputs_belong_to_their_input_split_or_not_and_renamed_ones_to_all() {
        let ids: Vec<String> = ["a", "b#x", "c"].map(String::from).into();
        let outputs = [message("a#1"), message("a#2"), message("b#x"), message("q")];
        let owners = owners_by_id(&ids, &outputs);
        assert_eq!(owners, [Some(0), Some(0), Some(1), None]);
        let results = [
            Ok(()),
            Err(ConnectorError::Retryable("x".into())),
            Ok(()),
            Ok(()),
        ];
        let per = per_input(vec![None, None, None], &owners, &results);
        assert!(per[0].is_err(), "one failed split fails its input");
        assert!(per[1].is_ok());
        assert!(
            per[2].is_ok(),
            "c owns nothing: it gets the renamed one's result"
        );
        let per = per_input(
            vec![None, None, None],
            &owners,
            &[
                Ok(()),
                Ok(()),
                Ok(()),
                Err(ConnectorError::Retryable("q".into())),
            ],
        );
        assert!(per[2].is_err());
    }
}
