//! The sweep's results: the paper-style mIoU table (rows: methods; columns: full and every
//! missing scenario), per-class IoU tables that show what each dropped modality costs and how
//! much DIS2 recovers, as Markdown, CSV and JSON, and a grouped bar chart.

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::json;
use std::path::{Path, PathBuf};

use super::plan::{Column, Method, Plan};

/// What `done.json` of an evaluation holds (the parts the tables use).
#[derive(Debug, Clone, Deserialize)]
struct Done {
    miou: Option<f64>,
    per_class: Vec<ClassIou>,
}

#[derive(Debug, Clone, Deserialize)]
struct ClassIou {
    iou: Option<f64>,
}

/// One cell's scores, when its evaluation is done.
#[derive(Debug, Clone)]
struct CellScores {
    miou: Option<f64>,
    per_class: Vec<Option<f64>>,
}

/// The grid with the scores found so far.
pub struct Results {
    methods: Vec<Method>,
    columns: Vec<Column>,
    /// `[method][column]`: `None` when not applicable or not done yet.
    cells: Vec<Vec<Option<CellScores>>>,
    /// `[method][column]`: whether the cell has an evaluation at all.
    applicable: Vec<Vec<bool>>,
}

impl Results {
    /// Reads the `done.json` of every cell's evaluation (`done_path` maps an evaluation name to
    /// it); cells whose file is absent stay empty.
    pub fn read(plan: &Plan, done_path: impl Fn(&str) -> PathBuf) -> Result<Self> {
        let mut methods: Vec<Method> = Vec::new();
        let mut columns: Vec<Column> = Vec::new();
        for c in &plan.cells {
            if !methods.contains(&c.method) {
                methods.push(c.method);
            }
            if !columns.contains(&c.column) {
                columns.push(c.column.clone());
            }
        }
        let mut cells = vec![vec![None; columns.len()]; methods.len()];
        let mut applicable = vec![vec![false; columns.len()]; methods.len()];
        for c in &plan.cells {
            let r = methods.iter().position(|m| *m == c.method).unwrap_or(0);
            let k = columns.iter().position(|x| *x == c.column).unwrap_or(0);
            let Some(eval) = &c.eval else { continue };
            applicable[r][k] = true;
            let path = done_path(eval);
            if !path.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let done: Done = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a sweep result", path.display()))?;
            cells[r][k] = Some(CellScores {
                miou: done.miou,
                per_class: done.per_class.iter().map(|c| c.iou).collect(),
            });
        }
        Ok(Results {
            methods,
            columns,
            cells,
            applicable,
        })
    }

    pub fn done_cells(&self) -> usize {
        self.cells.iter().flatten().filter(|c| c.is_some()).count()
    }

    /// Cells with an evaluation that is not done yet.
    pub fn missing_cells(&self) -> usize {
        self.cells
            .iter()
            .flatten()
            .zip(self.applicable.iter().flatten())
            .filter(|(c, a)| **a && c.is_none())
            .count()
    }

    fn cell(&self, method: Method, column: usize) -> Option<&CellScores> {
        let r = self.methods.iter().position(|m| *m == method)?;
        self.cells[r][column].as_ref()
    }

    /// Text of a cell: the value in percent, `n/a` where the method has no such cell, `…` where
    /// it is not done yet.
    fn show(&self, r: usize, k: usize, value: impl Fn(&CellScores) -> Option<f64>) -> String {
        if !self.applicable[r][k] {
            return "n/a".to_string();
        }
        match &self.cells[r][k] {
            None => "…".to_string(),
            Some(c) => pct(value(c)),
        }
    }

    /// The mIoU table as Markdown.
    pub fn miou_markdown(&self) -> String {
        let headers: Vec<String> = self.columns.iter().map(Column::header).collect();
        let mut md = format!("| method | {} |\n", headers.join(" | "));
        md.push_str(&format!("|---|{}\n", "---:|".repeat(headers.len())));
        for (r, m) in self.methods.iter().enumerate() {
            let row: Vec<String> = (0..self.columns.len())
                .map(|k| self.show(r, k, |c| c.miou))
                .collect();
            md.push_str(&format!("| {m} | {} |\n", row.join(" | ")));
        }
        md
    }

    /// Per missing scenario: per-class IoU of every method, the teacher with every modality,
    /// and two difference rows: what filling the dropped modality costs the teacher, and how
    /// much of it the DIS2 student wins back.
    pub fn per_class_markdown(&self, classes: &[String]) -> String {
        let full = self.columns.iter().position(Column::is_full);
        let mut md = String::new();
        for (k, column) in self.columns.iter().enumerate() {
            if column.is_full() {
                continue;
            }
            md.push_str(&format!(
                "\n#### Missing {} (IoU %, per class)\n\n",
                column.missing.join(" + ")
            ));
            md.push_str(&format!("| method | {} | mIoU |\n", classes.join(" | ")));
            md.push_str(&format!("|---|{}\n", "---:|".repeat(classes.len() + 1)));
            let teacher_full = full.and_then(|f| self.cell(Method::TeacherFill, f));
            if let Some(t) = teacher_full {
                md.push_str(&row("teacher, all modalities", t));
            }
            for (r, m) in self.methods.iter().enumerate() {
                if let Some(c) = &self.cells[r][k] {
                    md.push_str(&row(m.name(), c));
                }
            }
            let fill = self.cell(Method::TeacherFill, k);
            let dis2 = self.cell(Method::Dis2, k);
            if let (Some(t), Some(f)) = (teacher_full, fill) {
                md.push_str(&diff_row("cost of the loss (fill - all)", f, t));
            }
            if let (Some(d), Some(f)) = (dis2, fill) {
                md.push_str(&diff_row("recovered by dis2 (dis2 - fill)", d, f));
            }
        }
        md
    }

    /// Long CSV: method, column, class (or `mIoU`), IoU in [0, 1]; empty where not done.
    pub fn csv(&self, classes: &[String]) -> String {
        let mut csv = String::from("method,scenario,class,iou\n");
        let v = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.6}"));
        for (r, m) in self.methods.iter().enumerate() {
            for (k, col) in self.columns.iter().enumerate() {
                if !self.applicable[r][k] {
                    continue;
                }
                let cell = self.cells[r][k].as_ref();
                csv.push_str(&format!(
                    "{m},{},mIoU,{}\n",
                    col.key(),
                    v(cell.and_then(|c| c.miou))
                ));
                for (i, name) in classes.iter().enumerate() {
                    let iou = cell.and_then(|c| c.per_class.get(i).copied().flatten());
                    csv.push_str(&format!("{m},{},{name},{}\n", col.key(), v(iou)));
                }
            }
        }
        csv
    }

    pub fn json(&self, classes: &[String]) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .methods
            .iter()
            .enumerate()
            .map(|(r, m)| {
                let cells: serde_json::Map<String, serde_json::Value> = self
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| self.applicable[r][*k])
                    .map(|(k, col)| {
                        let value = match &self.cells[r][k] {
                            None => serde_json::Value::Null,
                            Some(c) => json!({"miou": c.miou, "per_class_iou": c.per_class}),
                        };
                        (col.key(), value)
                    })
                    .collect();
                json!({"method": m.name(), "cells": cells})
            })
            .collect();
        json!({
            "classes": classes,
            "scenarios": self.columns.iter().map(Column::key).collect::<Vec<_>>(),
            "methods": rows,
            "cells_done": self.done_cells(),
            "cells_missing": self.missing_cells(),
        })
    }

    /// Writes results.md, results.csv, results.json and miou.png into `out`.
    pub fn write(&self, out: &Path, classes: &[String]) -> Result<()> {
        let mut md = String::from("### mIoU (%)\n\n");
        md.push_str(&self.miou_markdown());
        md.push_str(
            "\n`n/a`: the method has no such cell (a unimodal model needs a missing modality); \
             `…`: not done yet.\n",
        );
        md.push_str(&self.per_class_markdown(classes));
        crate::fsutil::write_atomic(&out.join("results.md"), md.as_bytes())?;
        crate::fsutil::write_atomic(&out.join("results.csv"), self.csv(classes).as_bytes())?;
        let json = serde_json::to_string_pretty(&self.json(classes))?;
        crate::fsutil::write_atomic(&out.join("results.json"), json.as_bytes())?;
        let groups: Vec<String> = self.columns.iter().map(Column::header).collect();
        let series: Vec<(String, Vec<Option<f64>>)> = self
            .methods
            .iter()
            .enumerate()
            .map(|(r, m)| {
                let values = (0..self.columns.len())
                    .map(|k| self.cells[r][k].as_ref().and_then(|c| c.miou))
                    .collect();
                (m.name().to_string(), values)
            })
            .collect();
        crate::report::grouped_bars_png(
            &out.join("miou.png"),
            "mIoU by missing modality",
            &groups,
            &series,
            "mIoU",
        )
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{:.1}", 100.0 * v))
}

fn row(name: &str, c: &CellScores) -> String {
    let cells: Vec<String> = c.per_class.iter().map(|v| pct(*v)).collect();
    format!("| {name} | {} | {} |\n", cells.join(" | "), pct(c.miou))
}

/// `a - b` per class and for the mIoU, in points.
fn diff_row(name: &str, a: &CellScores, b: &CellScores) -> String {
    let d = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => format!("{:+.1}", 100.0 * (x - y)),
        _ => "-".to_string(),
    };
    let cells: Vec<String> = a
        .per_class
        .iter()
        .zip(&b.per_class)
        .map(|(x, y)| d(*x, *y))
        .collect();
    format!(
        "| *{name}* | {} | {} |\n",
        cells.join(" | "),
        d(a.miou, b.miou)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::plan::parse_scenarios;

    #[test]
    fn tables_show_done_missing_and_not_applicable_cells() {
        let model: crate::model::config::ModelConfig = crate::config::from_yaml_str(
            "num_classes: 2\ncrop: [32, 32]\nbase_width: 8\nmodalities:\n  - {name: optical, channels: 4}\n  - {name: dsm, channels: 1}\n",
        )
        .unwrap();
        let cols = parse_scenarios(&["dsm".into()], &model).unwrap();
        let methods = [Method::TeacherFill, Method::Unimodal, Method::Dis2];
        let plan = Plan::new(&methods, &cols, &model, 0.3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, miou: f64, a: f64, b: f64| {
            let text =
                format!(r#"{{"miou": {miou}, "per_class": [{{"iou": {a}}}, {{"iou": {b}}}]}}"#);
            std::fs::write(dir.path().join(format!("{name}.json")), text).unwrap();
        };
        write("teacher--full", 0.8, 0.9, 0.7);
        write("teacher--drop-dsm", 0.5, 0.8, 0.2);
        write("dis2-dsm--drop-dsm", 0.7, 0.85, 0.55);
        let results = Results::read(&plan, |e| dir.path().join(format!("{e}.json"))).unwrap();
        assert_eq!(results.done_cells(), 4); // dis2's full cell is the teacher's
        assert_eq!(results.missing_cells(), 1); // unimodal -dsm
        let md = results.miou_markdown();
        assert!(md.contains("| method | full | -dsm |"), "{md}");
        assert!(md.contains("| teacher-fill | 80.0 | 50.0 |"), "{md}");
        assert!(md.contains("| unimodal | n/a | … |"), "{md}");
        assert!(md.contains("| dis2 | 80.0 | 70.0 |"), "{md}");
        let classes = ["a".to_string(), "b".to_string()];
        let pc = results.per_class_markdown(&classes);
        assert!(
            pc.contains("| *cost of the loss (fill - all)* | -10.0 | -50.0 | -30.0 |"),
            "{pc}"
        );
        assert!(
            pc.contains("| *recovered by dis2 (dis2 - fill)* | +5.0 | +35.0 | +20.0 |"),
            "{pc}"
        );
        let csv = results.csv(&classes);
        assert!(csv.contains("dis2,dsm,b,0.550000\n"), "{csv}");
        assert!(csv.contains("unimodal,dsm,mIoU,\n"), "{csv}");
        results.write(dir.path(), &classes).unwrap();
        for f in ["results.md", "results.csv", "results.json", "miou.png"] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
    }
}
