//! The sweep's results: the paper-style mIoU table (rows: methods; columns: full and every
//! missing scenario) as mean ± standard deviation over seeds with their count, the paired
//! differences of `dis2` (and of `dis2-joint`) to every other row with their 95 % intervals,
//! per-class IoU tables that show what each dropped modality costs and how much DIS2 recovers,
//! the settings chosen on a validation split, as Markdown, CSV and JSON, and a grouped bar chart
//! with the spread over seeds.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

use super::plan::{Column, Method, Plan, Row};
use crate::data::layouts::Split;
use crate::metrics::{percent_or_dash, score_column};
use crate::stats::{paired_difference, summarize, PairedDifference, Summary};

/// The rows whose paired differences to every other row the tables give: `dis2`, the paper's
/// method as two stages, then `dis2-joint`, the authors' joint protocol (without its pair with
/// `dis2`, which `dis2`'s table holds).
const REFERENCES: [Method; 2] = [Method::Dis2, Method::Dis2Joint];

/// `done.json`: a sweep evaluation that is complete and what it scored; written by the sweep once
/// `dis2 eval`'s outputs are in place, read back by the tables. The fields are in alphabetical
/// order, the order of the keys in the files sweeps have written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Done {
    /// `teacher`, `student[dsm]` or `teacher-fill[dsm]`.
    pub branch: String,
    /// The modalities left out.
    pub dropped: Vec<String>,
    /// The evaluation's name, `<split>/s<seed>/<run>--<full|drop-...>`.
    pub eval: String,
    pub mean_f1: Option<f64>,
    pub miou: Option<f64>,
    pub overall_accuracy: Option<f64>,
    /// One entry per class, in class-id order.
    pub per_class: Vec<ClassDone>,
    /// Pixels scored (absent in sweeps written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixels: Option<u64>,
    /// The run scored, `s<seed>/<run>`.
    pub run: String,
    /// The unit of the scores, [`crate::metrics::SCORE_UNIT`] (absent in sweeps written before
    /// it was recorded, whose scores are fractions too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_unit: Option<String>,
    /// Wall time of the evaluation, in seconds.
    pub seconds: f64,
}

/// One class of [`Done`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ClassDone {
    pub class: String,
    pub f1: Option<f64>,
    pub iou: Option<f64>,
}

impl Done {
    /// Writes the record to `path`, atomically.
    pub(super) fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        crate::fsutil::write_atomic(path, text.as_bytes())
    }

    /// Reads the record at `path`.
    ///
    /// # Errors
    /// The file cannot be read, or is not a `done.json` (names the file).
    pub(super) fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let done: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a sweep result", path.display()))?;
        if let Some(unit) = done.score_unit.as_deref() {
            anyhow::ensure!(
                unit == crate::metrics::SCORE_UNIT,
                "{}: score_unit {unit:?}, expected {:?}",
                path.display(),
                crate::metrics::SCORE_UNIT
            );
        }
        Ok(done)
    }
}

/// One cell's scores for one seed, when its evaluation is done.
#[derive(Debug, Clone)]
struct CellScores {
    miou: Option<f64>,
    per_class: Vec<Option<f64>>,
    pixels: Option<u64>,
}

/// Picks a value out of one seed's scores.
type Pick<'a> = &'a dyn Fn(&CellScores) -> Option<f64>;

fn miou(c: &CellScores) -> Option<f64> {
    c.miou
}

/// The matrix of one split with the scores found so far.
pub(crate) struct Results {
    split: Split,
    rows: Vec<Row>,
    columns: Vec<Column>,
    seeds: Vec<u64>,
    /// `[row][column][seed]`: the evaluation that fills the cell; `None` when not applicable.
    evals: Vec<Vec<Vec<Option<String>>>>,
    /// `[row][column][seed]`: the scores, once the evaluation is done.
    cells: Vec<Vec<Vec<Option<CellScores>>>>,
}

impl Results {
    /// Reads the `done.json` of every evaluation of `split`'s cells (`done_path` maps an
    /// evaluation name to it); cells whose file is absent stay empty.
    pub fn read(plan: &Plan, split: Split, done_path: impl Fn(&str) -> PathBuf) -> Result<Self> {
        let rows = plan.matrix.rows();
        let columns = plan.matrix.columns();
        let seeds = plan.matrix.seeds.clone();
        let (n_cols, n_seeds) = (columns.len(), seeds.len());
        let mut evals: Vec<Vec<Vec<Option<String>>>> =
            vec![vec![vec![None; n_seeds]; n_cols]; rows.len()];
        let mut cells: Vec<Vec<Vec<Option<CellScores>>>> =
            vec![vec![vec![None; n_seeds]; n_cols]; rows.len()];
        for c in plan.cells.iter().filter(|c| c.split == split) {
            let (Some(r), Some(k), Some(s)) = (
                rows.iter().position(|x| *x == c.row),
                columns.iter().position(|x| *x == c.column),
                seeds.iter().position(|x| *x == c.seed),
            ) else {
                continue;
            };
            let Some(eval) = &c.eval else { continue };
            evals[r][k][s] = Some(eval.clone());
            let path = done_path(eval);
            if path.exists() {
                cells[r][k][s] = Some(read_done(&path)?);
            }
        }
        Ok(Results {
            split,
            rows,
            columns,
            seeds,
            evals,
            cells,
        })
    }

    pub fn split(&self) -> Split {
        self.split
    }

    pub(crate) fn done_cells(&self) -> usize {
        self.cells.iter().flatten().flatten().flatten().count()
    }

    /// Cells (of one seed) with an evaluation that is not done yet.
    pub(crate) fn missing_cells(&self) -> usize {
        self.cells
            .iter()
            .flatten()
            .flatten()
            .zip(self.evals.iter().flatten().flatten())
            .filter(|(c, e)| e.is_some() && c.is_none())
            .count()
    }

    fn applicable(&self, r: usize, k: usize) -> bool {
        self.evals[r][k].iter().any(Option::is_some)
    }

    /// One value per seed (`None` where not done or undefined).
    fn values(&self, r: usize, k: usize, pick: Pick) -> Vec<Option<f64>> {
        self.cells[r][k]
            .iter()
            .map(|c| c.as_ref().and_then(pick))
            .collect()
    }

    fn summary(&self, r: usize, k: usize, pick: Pick) -> Option<Summary> {
        let v: Vec<f64> = self.values(r, k, pick).into_iter().flatten().collect();
        summarize(&v)
    }

    fn row_index(&self, row: &Row) -> Option<usize> {
        self.rows.iter().position(|x| x == row)
    }

    /// Whether rows `a` and `b` are filled by the same evaluations in column `k` (as every DIS2
    /// variant's full column is its teacher's).
    fn same_model(&self, a: usize, b: usize, k: usize) -> bool {
        self.applicable(a, k) && self.evals[a][k] == self.evals[b][k]
    }

    /// Row `a` minus row `b` in column `k`, paired by seed.
    fn difference(&self, a: usize, b: usize, k: usize, pick: Pick) -> Option<PairedDifference> {
        paired_difference(&self.values(a, k, pick), &self.values(b, k, pick))
    }

    /// Text of a cell: mean ± sd (n) in percent, `n/a` where the method has no such cell, `…`
    /// where no seed is done yet.
    fn show(&self, r: usize, k: usize) -> String {
        if !self.applicable(r, k) {
            return "n/a".to_string();
        }
        self.summary(r, k, &miou)
            .map_or("…".to_string(), |s| fmt_summary(&s))
    }

    /// The pixels each cell was scored on, when they differ between the cells of a seed (a
    /// branch that cannot classify some pixels scores fewer): a note naming each cell's count.
    /// Empty when every cell of each seed was scored on as many pixels, or none recorded them.
    fn pixels_markdown(&self) -> String {
        let mut lines = Vec::new();
        for (s, seed) in self.seeds.iter().enumerate() {
            let mut counts: Vec<(usize, usize, u64)> = Vec::new();
            for (r, k) in
                (0..self.rows.len()).flat_map(|r| (0..self.columns.len()).map(move |k| (r, k)))
            {
                if let Some(n) = self.cells[r][k][s].as_ref().and_then(|c| c.pixels) {
                    counts.push((r, k, n));
                }
            }
            if counts.iter().all(|c| c.2 == counts[0].2) {
                continue;
            }
            let cells: Vec<String> = (counts.iter())
                .map(|&(r, k, n)| format!("{} {}: {n}", self.rows[r], self.columns[k].header()))
                .collect();
            lines.push(format!("- seed {seed}: {}\n", cells.join("; ")));
        }
        if lines.is_empty() {
            return String::new();
        }
        format!(
            "\n**Cells scored on different pixel sets** (pixels scored per cell; a branch scores \
             only the labelled pixels some branch of its checkpoint can classify, see \
             docs/eval.md):\n\n{}",
            lines.concat()
        )
    }

    /// The mIoU table as Markdown.
    pub(crate) fn miou_markdown(&self) -> String {
        let headers: Vec<String> = self.columns.iter().map(Column::header).collect();
        let mut md = format!("| method | {} |\n", headers.join(" | "));
        md.push_str(&format!("|---|{}\n", "---:|".repeat(headers.len())));
        for (r, row) in self.rows.iter().enumerate() {
            let cells: Vec<String> = (0..self.columns.len()).map(|k| self.show(r, k)).collect();
            md.push_str(&format!("| {row} | {} |\n", cells.join(" | ")));
        }
        md
    }

    /// The [`REFERENCES`] rows of the matrix, each with the rows it is compared with.
    fn comparisons(&self) -> Vec<(usize, Vec<usize>)> {
        let mut out: Vec<(usize, Vec<usize>)> = Vec::new();
        for method in REFERENCES {
            let Some(a) = self.row_index(&Row::of(method)) else {
                continue;
            };
            let others = (0..self.rows.len())
                .filter(|&r| r != a && !out.iter().any(|(earlier, _)| *earlier == r))
                .collect();
            out.push((a, others));
        }
        out
    }

    /// `dis2` minus every other row, then `dis2-joint` minus the others, per column, paired over
    /// seeds, with the 95 % t interval: one headed table for each of these rows the matrix has.
    pub(crate) fn differences_markdown(&self) -> String {
        let mut md = String::new();
        for (a, others) in self.comparisons() {
            md.push_str(&format!(
                "\n### {} minus each method (mIoU, percentage points, paired over seeds, 95 % t interval)\n\n\
                 {}\n`≈`: the interval contains 0, not distinguishable; `same model`: both \
                 rows are the same evaluation; without an interval, fewer than two seeds are \
                 done.\n",
                self.rows[a],
                self.differences_markdown_of(a, &others),
            ));
        }
        md
    }

    /// Row `a` minus each of the rows `others`, per column, paired over seeds.
    fn differences_markdown_of(&self, a: usize, others: &[usize]) -> String {
        let headers: Vec<String> = self.columns.iter().map(Column::header).collect();
        let mut md = format!("| {} minus | {} |\n", self.rows[a], headers.join(" | "));
        md.push_str(&format!("|---|{}\n", "---:|".repeat(headers.len())));
        for &r in others {
            let row = &self.rows[r];
            let cells: Vec<String> = (0..self.columns.len())
                .map(|k| self.show_difference(a, r, k))
                .collect();
            md.push_str(&format!("| {row} | {} |\n", cells.join(" | ")));
        }
        md
    }

    fn show_difference(&self, a: usize, b: usize, k: usize) -> String {
        if !self.applicable(a, k) || !self.applicable(b, k) {
            return "n/a".to_string();
        }
        if self.same_model(a, b, k) {
            return "same model".to_string();
        }
        self.difference(a, b, k, &miou)
            .map_or("…".to_string(), |d| fmt_difference(&d))
    }

    /// Per missing scenario: per-class IoU (mean over seeds) of every method, the teacher with
    /// every modality, and two difference rows (paired over seeds): what filling the dropped
    /// modality costs the teacher, and how much of it the DIS2 student wins back.
    pub(crate) fn per_class_markdown(&self, classes: &[String]) -> String {
        let full = self.columns.iter().position(Column::is_full);
        let fill = self.row_index(&Row::of(Method::TeacherFill));
        let dis2 = self.row_index(&Row::of(Method::Dis2));
        let mut md = String::new();
        for (k, column) in self.columns.iter().enumerate() {
            if column.is_full() {
                continue;
            }
            md.push_str(&format!(
                "\n#### Missing {} (IoU %, per class, mean over seeds)\n\n",
                column.missing.join(" + ")
            ));
            md.push_str(&format!("| method | {} | mIoU |\n", classes.join(" | ")));
            md.push_str(&format!("|---|{}\n", "---:|".repeat(classes.len() + 1)));
            let teacher_full = fill.zip(full);
            if let Some((f, c)) = teacher_full {
                md.push_str(&self.mean_row("teacher, all modalities", f, c, classes.len()));
            }
            for (r, row) in self.rows.iter().enumerate() {
                if self.cells[r][k].iter().any(Option::is_some) {
                    md.push_str(&self.mean_row(&row.name(), r, k, classes.len()));
                }
            }
            if let (Some(f), Some(c)) = (fill, full) {
                let cost = "cost of the loss (fill - all)";
                md.push_str(&self.diff_row(cost, (f, k), (f, c), classes.len()));
            }
            if let (Some(d), Some(f)) = (dis2, fill) {
                let back = "recovered by dis2 (dis2 - fill)";
                md.push_str(&self.diff_row(back, (d, k), (f, k), classes.len()));
            }
        }
        md
    }

    /// A per-class table row of means over seeds.
    fn mean_row(&self, name: &str, r: usize, k: usize, classes: usize) -> String {
        let mean = |pick: Pick| self.summary(r, k, pick).map(|s| s.mean);
        let cells: Vec<String> = (0..classes)
            .map(|i| percent_or_dash(mean(&|c| c.per_class.get(i).copied().flatten())))
            .collect();
        format!(
            "| {name} | {} | {} |\n",
            cells.join(" | "),
            percent_or_dash(mean(&miou))
        )
    }

    /// `a - b` per class and for the mIoU, in points, the mean of the per-seed differences.
    fn diff_row(&self, name: &str, a: (usize, usize), b: (usize, usize), classes: usize) -> String {
        let d = |pick: Pick| {
            let diff =
                paired_difference(&self.values(a.0, a.1, pick), &self.values(b.0, b.1, pick));
            diff.map_or("-".to_string(), |d| {
                format!("{:+.2}", 100.0 * d.summary.mean)
            })
        };
        let cells: Vec<String> = (0..classes)
            .map(|i| d(&|c| c.per_class.get(i).copied().flatten()))
            .collect();
        format!("| *{name}* | {} | {} |\n", cells.join(" | "), d(&miou))
    }

    /// The CSV header's per-seed columns: `seed_<s>_fraction` for every seed.
    fn seed_columns(&self) -> String {
        let names: Vec<String> = (self.seeds.iter())
            .map(|s| score_column(&format!("seed_{s}")))
            .collect();
        names.join(",")
    }

    /// Long CSV: method, scenario, class (or `mIoU`), n, mean, sd and each seed's IoU in [0, 1];
    /// empty where not done.
    pub fn csv(&self, classes: &[String]) -> String {
        let mut csv = format!(
            "method,scenario,class,n,{},{}\n",
            ["mean", "sd"].map(score_column).join(","),
            self.seed_columns()
        );
        for (r, row) in self.rows.iter().enumerate() {
            for (k, col) in self.columns.iter().enumerate() {
                if !self.applicable(r, k) {
                    continue;
                }
                let mut line = |name: &str, pick: Pick| {
                    let s = self.summary(r, k, pick);
                    let seeds: Vec<String> = self.values(r, k, pick).into_iter().map(num).collect();
                    csv.push_str(&format!(
                        "{row},{},{name},{},{},{},{}\n",
                        col.key(),
                        s.map_or(0, |s| s.n),
                        num(s.map(|s| s.mean)),
                        num(s.and_then(|s| s.sd)),
                        seeds.join(",")
                    ));
                };
                line("mIoU", &miou);
                for (i, name) in classes.iter().enumerate() {
                    line(name, &|c| c.per_class.get(i).copied().flatten());
                }
            }
        }
        csv
    }

    /// `dis2` (and `dis2-joint`) minus every other row per scenario (mIoU in [0, 1]): n, mean,
    /// sd, the 95 % interval, whether it excludes 0, and each seed's difference.
    pub(crate) fn differences_csv(&self) -> String {
        let mut csv = format!(
            "method,minus,scenario,n,{},distinguishable,{}\n",
            ["mean", "sd", "ci_low", "ci_high"]
                .map(score_column)
                .join(","),
            self.seed_columns()
        );
        for d in self.differences() {
            let (lo, hi) = (d.diff.ci.map(|c| c.0), d.diff.ci.map(|c| c.1));
            let seeds: Vec<String> = d.diff.per_seed.iter().copied().map(num).collect();
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{}\n",
                d.method,
                d.minus,
                d.scenario,
                d.diff.summary.n,
                num(Some(d.diff.summary.mean)),
                num(d.diff.summary.sd),
                num(lo),
                num(hi),
                d.diff
                    .distinguishable()
                    .map_or(String::new(), |b| b.to_string()),
                seeds.join(",")
            ));
        }
        csv
    }

    /// Every reference row minus other-row difference (see [`REFERENCES`]) that has at least
    /// one pair (same-model cells left out).
    fn differences(&self) -> Vec<Difference> {
        let mut out = Vec::new();
        for (d, others) in self.comparisons() {
            for r in others {
                for (k, col) in self.columns.iter().enumerate() {
                    if self.same_model(d, r, k) {
                        continue;
                    }
                    if let Some(diff) = self.difference(d, r, k, &miou) {
                        out.push(Difference {
                            method: self.rows[d].name(),
                            minus: self.rows[r].name(),
                            scenario: col.key(),
                            diff,
                        });
                    }
                }
            }
        }
        out
    }

    pub fn json(&self, classes: &[String]) -> Value {
        let methods: Vec<Value> = self
            .rows
            .iter()
            .enumerate()
            .map(|(r, row)| {
                let cells: serde_json::Map<String, Value> = (0..self.columns.len())
                    .filter(|&k| self.applicable(r, k))
                    .map(|k| (self.columns[k].key(), self.cell_json(r, k, classes)))
                    .collect();
                json!({"method": row.name(), "cells": cells})
            })
            .collect();
        let differences: Vec<Value> = self
            .differences()
            .iter()
            .map(|d| {
                json!({
                    "method": d.method, "minus": d.minus, "scenario": d.scenario,
                    "n": d.diff.summary.n, "mean": d.diff.summary.mean, "sd": d.diff.summary.sd,
                    "ci95": d.diff.ci.map(|(lo, hi)| [lo, hi]),
                    "distinguishable": d.diff.distinguishable(),
                    "per_seed": self.per_seed_json(&d.diff.per_seed),
                })
            })
            .collect();
        json!({
            "split": self.split.as_str(),
            "seeds": self.seeds,
            "classes": classes,
            "scenarios": self.columns.iter().map(Column::key).collect::<Vec<_>>(),
            "methods": methods,
            "differences": differences,
            "interval": "95 % Student t interval of the mean difference, paired over seeds",
            "cells_done": self.done_cells(),
            "cells_missing": self.missing_cells(),
            "score_unit": crate::metrics::SCORE_UNIT,
        })
    }

    fn per_seed_json(&self, values: &[Option<f64>]) -> Value {
        let map: serde_json::Map<String, Value> = self
            .seeds
            .iter()
            .zip(values)
            .map(|(s, v)| (s.to_string(), json!(v)))
            .collect();
        Value::Object(map)
    }

    /// A cell: `{n, miou: {mean, sd, per_seed}, per_class_iou: [{class, mean, sd, per_seed}]}`.
    fn cell_json(&self, r: usize, k: usize, classes: &[String]) -> Value {
        let stat = |pick: Pick| {
            let s = self.summary(r, k, pick);
            json!({
                "mean": s.map(|s| s.mean),
                "sd": s.and_then(|s| s.sd),
                "n": s.map_or(0, |s| s.n),
                "per_seed": self.per_seed_json(&self.values(r, k, pick)),
            })
        };
        let per_class: Vec<Value> = classes
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut v = stat(&|c| c.per_class.get(i).copied().flatten());
                v["class"] = json!(name);
                v
            })
            .collect();
        json!({
            "n": self.cells[r][k].iter().flatten().count(),
            "miou": stat(&miou),
            "per_class_iou": per_class,
        })
    }

    /// Writes results.md, results.csv, differences.csv, results.json and miou.png into `out`;
    /// with `selection` (the same matrix scored on a validation split), the settings chosen on it
    /// go into results.md and results.json, and its own table into `results-<split>.{csv,json}`.
    pub fn write(&self, out: &Path, classes: &[String], selection: Option<&Results>) -> Result<()> {
        let md = self.markdown(classes, selection);
        crate::fsutil::write_atomic(&out.join("results.md"), md.as_bytes())?;
        crate::fsutil::write_atomic(&out.join("results.csv"), self.csv(classes).as_bytes())?;
        crate::fsutil::write_atomic(
            &out.join("differences.csv"),
            self.differences_csv().as_bytes(),
        )?;
        let mut doc = self.json(classes);
        if let Some(val) = selection {
            doc["selection"] = self.selection_json(val);
            let name = format!("results-{}", val.split.as_str());
            let csv = val.csv(classes);
            crate::fsutil::write_atomic(&out.join(format!("{name}.csv")), csv.as_bytes())?;
            let text = serde_json::to_string_pretty(&val.json(classes))?;
            crate::fsutil::write_atomic(&out.join(format!("{name}.json")), text.as_bytes())?;
        }
        let json = serde_json::to_string_pretty(&doc)?;
        crate::fsutil::write_atomic(&out.join("results.json"), json.as_bytes())?;
        self.chart(&out.join("miou.png"))
    }

    fn markdown(&self, classes: &[String], selection: Option<&Results>) -> String {
        let split = self.split.as_str();
        let mut md = format!(
            "### mIoU (%) on the {split} split: mean ± sd over seeds (n)\n\n{}",
            self.miou_markdown()
        );
        md.push_str(
            "\n`n/a`: the method has no such cell (a unimodal model needs a missing modality); \
             `…`: not done yet; (n): the seeds done.\n",
        );
        md.push_str(&self.pixels_markdown());
        md.push_str(&self.differences_markdown());
        if let Some(val) = selection {
            md.push_str(&self.selection_markdown(val));
        }
        md.push_str(&self.per_class_markdown(classes));
        md
    }

    /// For each missing scenario, the `dis2` row (itself or a variant) with the best mean mIoU
    /// on `val`'s split, and that row's scores here.
    fn choices(&self, val: &Results) -> Vec<(usize, Option<usize>)> {
        (0..self.columns.len())
            .filter(|&k| !self.columns[k].is_full())
            .map(|k| {
                let best = (0..val.rows.len())
                    .filter(|&r| val.rows[r].is_dis2())
                    .filter_map(|r| val.summary(r, k, &miou).map(|s| (r, s.mean)))
                    .max_by(first_of_ties)
                    .map(|(r, _)| r);
                (k, best)
            })
            .collect()
    }

    /// The one `dis2` row with the best mean over the missing scenarios of its mean val mIoU
    /// (rows done in every scenario only).
    fn overall_choice(&self, val: &Results) -> Option<(usize, f64)> {
        let missing: Vec<usize> = (0..val.columns.len())
            .filter(|&k| !val.columns[k].is_full())
            .collect();
        (0..val.rows.len())
            .filter(|&r| val.rows[r].is_dis2())
            .filter_map(|r| {
                let means: Option<Vec<f64>> = missing
                    .iter()
                    .map(|&k| val.summary(r, k, &miou).map(|s| s.mean))
                    .collect();
                let means = means?;
                (!means.is_empty()).then(|| (r, means.iter().sum::<f64>() / means.len() as f64))
            })
            .max_by(first_of_ties)
    }

    fn selection_markdown(&self, val: &Results) -> String {
        let vs = val.split.as_str();
        let others: Vec<usize> = (0..self.rows.len())
            .filter(|&r| !self.rows[r].is_dis2())
            .collect();
        let names: Vec<String> = others
            .iter()
            .map(|&r| format!("minus {}", self.rows[r]))
            .collect();
        let mut md = format!(
            "\n### Settings chosen on the {vs} split, scored on {}\n\n\
             | scenario | chosen on {vs} ({vs} mIoU %) | {} mIoU % | {} (points) |\n|---|---|---:|{}\n",
            self.split.as_str(),
            self.split.as_str(),
            names.join(" | "),
            "---:|".repeat(others.len())
        );
        for (k, best) in self.choices(val) {
            let header = self.columns[k].header();
            let Some(r) = best else {
                md.push_str(&format!(
                    "| {header} | … | | {}\n",
                    "|".repeat(others.len())
                ));
                continue;
            };
            let chosen = val
                .summary(r, k, &miou)
                .map_or("…".to_string(), |s| fmt_summary(&s));
            let diffs: Vec<String> = others
                .iter()
                .map(|&o| self.show_difference(r, o, k))
                .collect();
            md.push_str(&format!(
                "| {header} | {} ({chosen}) | {} | {} |\n",
                self.rows[r],
                self.show(r, k),
                diffs.join(" | ")
            ));
        }
        if let Some((r, mean)) = self.overall_choice(val) {
            md.push_str(&format!(
                "\nOne setting for every scenario (best mean {vs} mIoU over the missing \
                 scenarios, {} %): **{}**.\n",
                crate::metrics::percent(mean),
                self.rows[r]
            ));
        }
        md
    }

    fn selection_json(&self, val: &Results) -> Value {
        let per_scenario: Vec<Value> = self
            .choices(val)
            .into_iter()
            .map(|(k, best)| {
                let chosen = best.map(|r| self.rows[r].name());
                let test = best.and_then(|r| self.summary(r, k, &miou));
                let selected = best.and_then(|r| val.summary(r, k, &miou));
                json!({
                    "scenario": self.columns[k].key(),
                    "chosen": chosen,
                    "selection_miou": selected.map(|s| s.mean),
                    "miou": test.map(|s| s.mean),
                    "sd": test.and_then(|s| s.sd),
                    "n": test.map_or(0, |s| s.n),
                })
            })
            .collect();
        let overall = self.overall_choice(val);
        json!({
            "chosen_on": val.split.as_str(),
            "per_scenario": per_scenario,
            "one_setting": overall.map(|(r, _)| self.rows[r].name()),
            "one_setting_selection_miou": overall.map(|(_, m)| m),
        })
    }

    /// The grouped bar chart: each row's mean mIoU (%) per column, with its spread over seeds.
    fn chart(&self, path: &Path) -> Result<()> {
        let groups: Vec<String> = self.columns.iter().map(Column::header).collect();
        let series: Vec<(String, Vec<Vec<f64>>)> = self
            .rows
            .iter()
            .enumerate()
            .map(|(r, row)| {
                let values = (0..self.columns.len())
                    .map(|k| {
                        let values = self.values(r, k, &miou).into_iter().flatten();
                        values.map(|v| 100.0 * v).collect()
                    })
                    .collect();
                (row.name(), values)
            })
            .collect();
        let title = format!(
            "mIoU (%) by missing modality ({} split; bars: mean, whiskers: ± sd, dots: seeds)",
            self.split.as_str()
        );
        crate::report::grouped_bars_png(path, &title, &groups, &series, "mIoU (%)")
    }
}

/// One `dis2` minus other-row difference.
struct Difference {
    /// The reference row: `dis2` or `dis2-joint`.
    method: String,
    minus: String,
    scenario: String,
    diff: PairedDifference,
}

fn read_done(path: &Path) -> Result<CellScores> {
    let done = Done::read(path)?;
    Ok(CellScores {
        miou: done.miou,
        per_class: done.per_class.iter().map(|c| c.iou).collect(),
        pixels: done.pixels,
    })
}

/// `78.12 ± 0.80 (3)`, or `78.12 (1)` for one seed, in percent.
fn fmt_summary(s: &Summary) -> String {
    use crate::metrics::percent;
    match s.sd {
        Some(sd) => format!("{} ± {} ({})", percent(s.mean), percent(sd), s.n),
        None => format!("{} ({})", percent(s.mean), s.n),
    }
}

/// `+1.70 [-0.50, +3.90] (3) ≈` (`≈`: the interval contains 0), or `+1.70 (1)`, in points.
fn fmt_difference(d: &PairedDifference) -> String {
    let mean = 100.0 * d.summary.mean;
    match d.ci {
        Some((lo, hi)) => {
            let mark = if d.distinguishable() == Some(false) {
                " ≈"
            } else {
                ""
            };
            format!(
                "{mean:+.2} [{:+.2}, {:+.2}] ({}){mark}",
                100.0 * lo,
                100.0 * hi,
                d.summary.n
            )
        }
        None => format!("{mean:+.2} ({})", d.summary.n),
    }
}

/// A CSV number (6 decimals), empty when absent.
fn num(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.6}"))
}

/// Orders `(row, score)` by score, and equal scores so that the earlier row wins `max_by`: a
/// variant that changes nothing (KD still off in a short run) never displaces `dis2` itself.
fn first_of_ties(a: &(usize, f64), b: &(usize, f64)) -> std::cmp::Ordering {
    a.1.total_cmp(&b.1).then(b.0.cmp(&a.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::plan::{parse_scenarios, parse_variants, Matrix};

    fn model() -> crate::model::config::ModelConfig {
        crate::config::from_yaml_str(
            "num_classes: 2\ncrop: [32, 32]\nbase_width: 8\nmodalities:\n  - {name: optical, channels: 4}\n  - {name: dsm, channels: 1}\n",
        )
        .unwrap()
    }

    fn matrix(methods: &[Method], seeds: &[u64]) -> Matrix {
        Matrix {
            methods: methods.to_vec(),
            variants: Vec::new(),
            scenarios: parse_scenarios(&["dsm".into()], &model()).unwrap(),
            seeds: seeds.to_vec(),
            splits: vec![Split::Test],
            modality_dropout: 0.3,
            teacher_set: Vec::new(),
            joint_probabilities: Default::default(),
            generic: None,
        }
    }

    /// Writes a `done.json` for `eval` into `dir`: mIoU `miou`, two classes of IoU `a` and `b`,
    /// 1000 pixels scored.
    fn write(dir: &Path, eval: &str, miou: f64, a: f64, b: f64) {
        write_scored(dir, eval, (miou, a, b), 1000);
    }

    /// [`write`] with `pixels` scored.
    fn write_scored(dir: &Path, eval: &str, (miou, a, b): (f64, f64, f64), pixels: u64) {
        let class = |class: &str, iou: f64| ClassDone {
            class: class.into(),
            f1: None,
            iou: Some(iou),
        };
        let done = Done {
            branch: "teacher".into(),
            dropped: Vec::new(),
            eval: eval.into(),
            mean_f1: None,
            miou: Some(miou),
            overall_accuracy: None,
            per_class: vec![class("a", a), class("b", b)],
            pixels: Some(pixels),
            run: "run".into(),
            score_unit: Some(crate::metrics::SCORE_UNIT.into()),
            seconds: 1.0,
        };
        let path = dir.join(format!("{eval}.json"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        done.write(&path).unwrap();
    }

    /// A `done.json` as sweeps have written it (keys sorted) reads, and writes back the same.
    #[test]
    fn done_json_reads_and_writes_the_same_keys() {
        let text = r#"{
  "branch": "student[dsm]",
  "dropped": [
    "dsm"
  ],
  "eval": "test/s1/dis2-dsm--drop-dsm",
  "mean_f1": 0.75,
  "miou": 0.625,
  "overall_accuracy": null,
  "per_class": [
    {
      "class": "building",
      "f1": 0.5,
      "iou": null
    }
  ],
  "run": "s1/dis2-dsm",
  "seconds": 2.5
}"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("done.json");
        std::fs::write(&path, text).unwrap();
        let done = Done::read(&path).unwrap();
        assert_eq!((done.miou, done.per_class[0].iou), (Some(0.625), None));
        done.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        std::fs::write(&path, r#"{"miou": 0.5}"#).unwrap();
        let err = format!("{:#}", Done::read(&path).unwrap_err());
        assert!(err.contains("not a sweep result"), "{err}");
    }

    #[test]
    fn cells_scored_on_different_pixels_are_named() {
        let methods = [Method::TeacherFill, Method::Dis2];
        let plan = Plan::new(&matrix(&methods, &[1]), &model()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let done = |e: &str| dir.path().join(format!("{e}.json"));
        write(dir.path(), "test/s1/teacher--full", 0.8, 0.9, 0.7);
        write(dir.path(), "test/s1/teacher--drop-dsm", 0.5, 0.8, 0.2);
        let md = Results::read(&plan, Split::Test, done)
            .unwrap()
            .pixels_markdown();
        assert_eq!(md, "", "the same pixels everywhere: no note");
        write_scored(
            dir.path(),
            "test/s1/dis2-dsm--drop-dsm",
            (0.7, 0.8, 0.6),
            990,
        );
        let md = Results::read(&plan, Split::Test, done)
            .unwrap()
            .pixels_markdown();
        assert!(md.contains("Cells scored on different pixel sets"), "{md}");
        assert!(
            md.contains("teacher-fill full: 1000; ") && md.contains("dis2 -dsm: 990"),
            "{md}"
        );
    }

    #[test]
    fn tables_show_done_missing_and_not_applicable_cells() {
        let methods = [Method::TeacherFill, Method::Unimodal, Method::Dis2];
        let plan = Plan::new(&matrix(&methods, &[1]), &model()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "test/s1/teacher--full", 0.8, 0.9, 0.7);
        write(dir.path(), "test/s1/teacher--drop-dsm", 0.5, 0.8, 0.2);
        write(dir.path(), "test/s1/dis2-dsm--drop-dsm", 0.7, 0.85, 0.55);
        let done = |e: &str| dir.path().join(format!("{e}.json"));
        let results = Results::read(&plan, Split::Test, done).unwrap();
        assert_eq!(results.done_cells(), 4); // dis2's full cell is the teacher's
        assert_eq!(results.missing_cells(), 1); // unimodal -dsm
        let md = results.miou_markdown();
        assert!(md.contains("| method | full | -dsm |"), "{md}");
        assert!(
            md.contains("| teacher-fill | 80.00 (1) | 50.00 (1) |"),
            "{md}"
        );
        assert!(md.contains("| unimodal | n/a | … |"), "{md}");
        assert!(md.contains("| dis2 | 80.00 (1) | 70.00 (1) |"), "{md}");
        let diffs = results.differences_markdown();
        assert!(
            diffs.contains("| teacher-fill | same model | +20.00 (1) |"),
            "{diffs}"
        );
        let classes = ["a".to_string(), "b".to_string()];
        let pc = results.per_class_markdown(&classes);
        assert!(
            pc.contains("| *cost of the loss (fill - all)* | -10.00 | -50.00 | -30.00 |"),
            "{pc}"
        );
        assert!(
            pc.contains("| *recovered by dis2 (dis2 - fill)* | +5.00 | +35.00 | +20.00 |"),
            "{pc}"
        );
        let csv = results.csv(&classes);
        assert!(
            csv.starts_with("method,scenario,class,n,mean_fraction,sd_fraction,seed_1_fraction\n"),
            "{csv}"
        );
        assert!(csv.contains("dis2,dsm,b,1,0.550000,,0.550000\n"), "{csv}");
        assert!(csv.contains("unimodal,dsm,mIoU,0,,,\n"), "{csv}");
        results.write(dir.path(), &classes, None).unwrap();
        for f in [
            "results.md",
            "results.csv",
            "differences.csv",
            "results.json",
            "miou.png",
        ] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
    }

    #[test]
    fn three_seeds_give_mean_sd_and_paired_intervals_by_hand() {
        let methods = [Method::Unimodal, Method::Dis2, Method::Dis2NoKd];
        let plan = Plan::new(&matrix(&methods, &[1, 2, 3]), &model()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // dis2: 0.80, 0.78, 0.83; unimodal: 0.76, 0.77, 0.79 (differences 0.04, 0.01, 0.04);
        // no-kd: 0.75, 0.72, 0.77 (differences 0.05, 0.06, 0.06).
        let values = [
            ("dis2-dsm--drop-dsm", [0.80, 0.78, 0.83]),
            ("unimodal-optical--full", [0.76, 0.77, 0.79]),
            ("dis2-no-kd-dsm--drop-dsm", [0.75, 0.72, 0.77]),
        ];
        for (eval, v) in values {
            for (s, x) in v.iter().enumerate() {
                write(dir.path(), &format!("test/s{}/{eval}", s + 1), *x, *x, 0.5);
            }
        }
        for s in 1..=2 {
            write(
                dir.path(),
                &format!("test/s{s}/teacher--full"),
                0.9,
                0.9,
                0.9,
            );
        }
        let done = |e: &str| dir.path().join(format!("{e}.json"));
        let results = Results::read(&plan, Split::Test, done).unwrap();
        let md = results.miou_markdown();
        // dis2: mean 0.80333, sd sqrt(((-0.00333)^2 + (-0.02333)^2 + 0.02667^2) / 2) = 0.025166.
        assert!(
            md.contains("| dis2 | 90.00 ± 0.00 (2) | 80.33 ± 2.52 (3) |"),
            "{md}"
        );
        assert!(md.contains("| unimodal | n/a | 77.33 ± 1.53 (3) |"), "{md}");
        let diffs = results.differences_markdown();
        // unimodal: mean 3.0, half-width 4.3027 x 1.7321 / sqrt(3) = 4.30 points: [-1.3, +7.3].
        assert!(
            diffs.contains("| unimodal | n/a | +3.00 [-1.30, +7.30] (3) ≈ |"),
            "{diffs}"
        );
        // no-kd: 0.05, 0.06, 0.06: mean 5.667, sd 0.5774, half-width 4.3027 x 0.5774 / 1.7321
        // = 1.434 points: [+4.2, +7.1], distinguishable.
        assert!(
            diffs.contains("| dis2-no-kd | same model | +5.67 [+4.23, +7.10] (3) |"),
            "{diffs}"
        );
        let csv = results.differences_csv();
        assert!(
            csv.contains("dis2,unimodal,dsm,3,0.030000,0.017321,-0.013027,0.073027,false,0.040000,0.010000,0.040000\n"),
            "{csv}"
        );
        let doc = results.json(&["a".into(), "b".into()]);
        let dis2 = &doc["methods"][1]["cells"]["dsm"];
        assert_eq!(dis2["n"], 3);
        assert!(
            (dis2["miou"]["sd"].as_f64().unwrap() - 0.025_166_1).abs() < 1e-6,
            "{dis2}"
        );
        assert_eq!(dis2["miou"]["per_seed"]["2"], 0.78);
        assert_eq!(doc["methods"][1]["cells"]["full"]["n"], 2);
        // Seed 3's teacher is not scored: the full cells of dis2 and dis2-no-kd.
        assert_eq!(results.missing_cells(), 2);
    }

    #[test]
    fn dis2_joint_is_paired_with_every_row_and_its_full_column_is_its_teacher() {
        let methods = [Method::Unimodal, Method::Dis2, Method::Dis2Joint];
        let plan = Plan::new(&matrix(&methods, &[1, 2]), &model()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // joint - dis2 with the DSM missing: 0.02, 0.04; joint - unimodal: 0.05, 0.05.
        let values = [
            ("teacher--full", [0.90, 0.92]),
            ("dis2-dsm--drop-dsm", [0.80, 0.78]),
            ("unimodal-optical--full", [0.77, 0.77]),
            ("dis2-joint--full", [0.88, 0.89]),
            ("dis2-joint--drop-dsm", [0.82, 0.82]),
        ];
        for (eval, v) in values {
            for (s, x) in v.iter().enumerate() {
                write(dir.path(), &format!("test/s{}/{eval}", s + 1), *x, *x, 0.5);
            }
        }
        let done = |e: &str| dir.path().join(format!("{e}.json"));
        let results = Results::read(&plan, Split::Test, done).unwrap();
        assert_eq!(results.missing_cells(), 0);
        let md = results.miou_markdown();
        assert!(
            md.contains("| dis2-joint | 88.50 ± 0.71 (2) | 82.00 ± 0.00 (2) |"),
            "{md}"
        );
        let diffs = results.differences_markdown();
        // dis2 minus dis2-joint: its own teacher, so the full column is a difference too.
        // Full: 0.02, 0.03: mean 2.5, sd 0.7071, half-width 12.706 x 0.7071 / 1.4142 = 6.35.
        assert!(
            diffs.contains(
                "| dis2-joint | +2.50 [-3.85, +8.85] (2) ≈ | -3.00 [-15.71, +9.71] (2) ≈ |"
            ),
            "{diffs}"
        );
        // dis2-joint's own table: every row but itself and dis2 (dis2's table has that pair).
        let joint = diffs.split("### dis2-joint minus").nth(1).expect("{diffs}");
        assert!(
            joint.contains("| unimodal | n/a | +5.00 [+5.00, +5.00] (2) |"),
            "{joint}"
        );
        assert!(!joint.contains("| dis2 |"), "{joint}");
        let csv = results.differences_csv();
        assert!(
            csv.contains("dis2-joint,unimodal,dsm,2,0.050000,0.000000,0.050000,0.050000,true,"),
            "{csv}"
        );
        let doc = results.json(&["a".to_string(), "b".to_string()]);
        let pairs: Vec<(&str, &str, &str)> = doc["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let s = |k: &str| d[k].as_str().unwrap();
                (s("method"), s("minus"), s("scenario"))
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("dis2", "unimodal", "dsm"),
                ("dis2", "dis2-joint", "full"),
                ("dis2", "dis2-joint", "dsm"),
                ("dis2-joint", "unimodal", "dsm"),
            ]
        );
    }

    #[test]
    fn settings_are_chosen_on_validation_and_reported_on_test() {
        let mut g = matrix(&[Method::Unimodal, Method::Dis2], &[1, 2]);
        g.variants = parse_variants(&["kd1:train.lambda_kd=1".into()]).unwrap();
        g.splits = vec![Split::Test, Split::Val];
        let plan = Plan::new(&g, &model()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // On val the variant is better; on test it is the other way round.
        for s in 1..=2 {
            for (split, dis2, kd1, uni) in [("val", 0.70, 0.75, 0.6), ("test", 0.72, 0.71, 0.6)] {
                let x = 0.01 * s as f64;
                write(
                    dir.path(),
                    &format!("{split}/s{s}/dis2-dsm--drop-dsm"),
                    dis2 + x,
                    0.5,
                    0.5,
                );
                write(
                    dir.path(),
                    &format!("{split}/s{s}/dis2@kd1-dsm--drop-dsm"),
                    kd1 + x,
                    0.5,
                    0.5,
                );
                write(
                    dir.path(),
                    &format!("{split}/s{s}/unimodal-optical--full"),
                    uni,
                    0.5,
                    0.5,
                );
            }
        }
        let done = |e: &str| dir.path().join(format!("{e}.json"));
        let test = Results::read(&plan, Split::Test, done).unwrap();
        let val = Results::read(&plan, Split::Val, done).unwrap();
        let md = test.selection_markdown(&val);
        assert!(
            md.contains("| -dsm | dis2@kd1 (76.50 ± 0.71 (2)) | 72.50 ± 0.71 (2) |"),
            "{md}"
        );
        assert!(
            md.contains("best mean val mIoU over the missing scenarios, 76.50 %): **dis2@kd1**"),
            "{md}"
        );
        let sel = test.selection_json(&val);
        assert_eq!(sel["per_scenario"][0]["chosen"], "dis2@kd1");
        assert!((sel["per_scenario"][0]["miou"].as_f64().unwrap() - 0.725).abs() < 1e-12);
        test.write(dir.path(), &["a".into(), "b".into()], Some(&val))
            .unwrap();
        assert!(dir.path().join("results-val.csv").exists());

        // A tie on val goes to dis2 itself, the row listed first.
        for s in 1..=2 {
            let x = 0.01 * s as f64;
            write(
                dir.path(),
                &format!("val/s{s}/dis2@kd1-dsm--drop-dsm"),
                0.70 + x,
                0.5,
                0.5,
            );
        }
        let val = Results::read(&plan, Split::Val, done).unwrap();
        let sel = test.selection_json(&val);
        assert_eq!(sel["per_scenario"][0]["chosen"], "dis2", "{sel}");
        assert_eq!(sel["one_setting"], "dis2", "{sel}");
    }
}
