//! The README's recipe for a training run's snapshots, end to end: step 0 becomes the checkpoint,
//! each later step is imported with its step as the epoch and appended to one log as one atomic
//! group, and any step comes back exactly (the same state hash as importing it alone) with
//! `replay --to-epoch STEP` and `export --to-epoch STEP`.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{code, json, ok, run};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

const STEPS: u64 = 10;
const ROWS: usize = 2000;
const DIM: usize = 64;

/// A small model: an embedding table, a dense layer and a bias, as F32.
struct Model {
    embedding: Vec<f32>,
    dense: Vec<f32>,
    bias: Vec<f32>,
}

impl Model {
    fn new() -> Model {
        let v = |n: usize, k: f32| (0..n).map(|i| (i as f32 * k).sin()).collect();
        Model {
            embedding: v(ROWS * DIM, 0.37),
            dense: v(DIM * DIM, 0.11),
            bias: v(DIM, 0.5),
        }
    }

    /// One training step: 1% of the embedding rows move a little, picked by a fixed LCG.
    fn step(&mut self, step: u64) {
        let mut x = step.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        for _ in 0..ROWS / 100 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let row = (x >> 33) as usize % ROWS;
            for v in &mut self.embedding[row * DIM..(row + 1) * DIM] {
                *v += 1e-3 * ((x >> 20) as u16 as f32 / 65536.0 - 0.5);
            }
        }
    }

    fn write(&self, path: &Path) {
        let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
        let (e, d, b) = (bytes(&self.embedding), bytes(&self.dense), bytes(&self.bias));
        let tensors = [
            (
                "embeddings.weight",
                TensorView::new(Dtype::F32, vec![ROWS, DIM], &e).unwrap(),
            ),
            (
                "layer.0.dense.weight",
                TensorView::new(Dtype::F32, vec![DIM, DIM], &d).unwrap(),
            ),
            (
                "layer.0.dense.bias",
                TensorView::new(Dtype::F32, vec![DIM], &b).unwrap(),
            ),
        ];
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        std::fs::write(path, safetensors::serialize(tensors, Some(meta)).unwrap()).unwrap();
    }
}

fn state_hash(dir: &Path, args: &[&str]) -> String {
    let mut a = args.to_vec();
    a.push("--json");
    json(&ok(dir, &a))["state_hash"].as_str().unwrap().to_string()
}

#[test]
fn a_training_runs_snapshots_become_one_checkpoint_and_one_log_and_every_step_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut model = Model::new();
    model.write(&d.join("step0.safetensors"));
    // The recipe, as the README gives it.
    ok(d, &["import", "step0.safetensors", "-o", "run.ckpt"]);
    for step in 1..=STEPS {
        model.step(step);
        let file = format!("step{step}.safetensors");
        model.write(&d.join(&file));
        let s = step.to_string();
        ok(d, &["import", &file, "--epoch", &s, "-o", "next.ckpt"]);
        if step == 1 {
            ok(d, &["diff", "run.ckpt", "next.ckpt", "--emit-log", "run.log"]);
        } else {
            ok(
                d,
                &[
                    "diff",
                    "run.ckpt",
                    "--a-log",
                    "run.log",
                    "next.ckpt",
                    "--emit-log",
                    "run.log",
                    "--append",
                ],
            );
        }
        std::fs::remove_file(d.join("next.ckpt")).unwrap();
    }
    // Every step comes back exactly: replay and export at its epoch give the state (epochs
    // included) and the file of importing that step alone.
    for step in 0..=STEPS {
        let s = step.to_string();
        let file = format!("step{step}.safetensors");
        ok(d, &["import", &file, "--epoch", &s, "-o", "alone.ckpt"]);
        let alone = state_hash(d, &["verify", "alone.ckpt"]);
        let replayed = state_hash(
            d,
            &["replay", "--device", "cpu", "run.ckpt", "run.log", "--to-epoch", &s],
        );
        assert_eq!(replayed, alone, "step {step}: replay --to-epoch {step}");
        ok(
            d,
            &[
                "export",
                "run.ckpt",
                "run.log",
                "--to-epoch",
                &s,
                "-o",
                "back.safetensors",
            ],
        );
        ok(d, &["import", "back.safetensors", "--epoch", &s, "-o", "back.ckpt"]);
        let diff = run(d, &["diff", "-q", "--bytes-only", "back.ckpt", "alone.ckpt"]);
        assert_eq!(
            code(&diff),
            0,
            "step {step}: export --to-epoch {step} gives the step's tensors"
        );
    }
    // One group per step: the log is whole after each append, and a reader never sees half a step.
    ok(d, &["verify", "run.ckpt", "run.log"]);
    let groups = json(&ok(d, &["inspect", "--json", "--records", "run.log"]));
    let epochs: std::collections::BTreeSet<u64> = groups[0]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, (1..=STEPS).collect(), "every record carries its step");
}
