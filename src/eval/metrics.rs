//! Accuracy overall and per class, top-k predictions and the confusion matrix, from a score matrix.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ClassAccuracy {
    pub name: String,
    pub correct: usize,
    pub total: usize,
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub path: String,
    pub label: usize,
    pub predicted: usize,
    /// (class, probability) of the best five, best first.
    pub top5: Vec<(usize, f32)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub accuracy: f64,
    pub correct: usize,
    pub total: usize,
    pub per_class: Vec<ClassAccuracy>,
    pub predictions: Vec<Prediction>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// `logits[i]`: one row of class scores per sample.
pub fn evaluate(
    logits: &[Vec<f32>],
    labels: &[usize],
    paths: &[String],
    class_names: &[String],
) -> Evaluation {
    let c = class_names.len();
    let mut confusion = vec![vec![0; c]; c];
    let mut predictions = Vec::with_capacity(logits.len());
    for ((row, &label), path) in logits.iter().zip(labels).zip(paths) {
        let probs = softmax(row);
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let predicted = order.first().copied().unwrap_or(0);
        confusion[label][predicted] += 1;
        predictions.push(Prediction {
            path: path.clone(),
            label,
            predicted,
            top5: order.iter().take(5).map(|&k| (k, probs[k])).collect(),
        });
    }
    let per_class: Vec<ClassAccuracy> = (0..c)
        .map(|k| {
            let total: usize = confusion[k].iter().sum();
            let correct = confusion[k][k];
            ClassAccuracy {
                name: class_names[k].clone(),
                correct,
                total,
                accuracy: ratio(correct, total),
            }
        })
        .collect();
    let correct: usize = per_class.iter().map(|p| p.correct).sum();
    Evaluation {
        accuracy: ratio(correct, labels.len()),
        correct,
        total: labels.len(),
        per_class,
        predictions,
        confusion,
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_per_class_and_confusion() {
        let names = vec!["a".to_string(), "b".to_string()];
        let logits = vec![vec![2.0, 1.0], vec![0.0, 3.0], vec![5.0, 1.0]];
        let labels = vec![0, 1, 1];
        let paths = vec!["x".into(), "y".into(), "z".into()];
        let e = evaluate(&logits, &labels, &paths, &names);
        assert_eq!(e.correct, 2);
        assert!((e.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(e.per_class[1].correct, 1);
        assert_eq!(e.per_class[1].total, 2);
        assert_eq!(e.confusion, vec![vec![1, 0], vec![1, 1]]);
        assert_eq!(e.predictions[2].predicted, 0);
        let p: f32 = e.predictions[0].top5.iter().map(|t| t.1).sum();
        assert!((p - 1.0).abs() < 1e-6);
    }
}
