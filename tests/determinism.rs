//! Same seed, same numbers: initialisation, BatchNorm batch statistics and transformer dropout.
//! (Its own test binary: libtorch's random generator is process-wide, so a test running beside it
//! would draw from the same stream.)

mod common;

use common::*;
use dis2::model::Scenario;
use dis2::train::dlkd::dlkd;
use tch::{Device, Kind, Tensor};

#[test]
fn same_seed_same_numbers() {
    let ch = [3, 1];
    tch::manual_seed(9);
    let x: Vec<Tensor> = ch
        .iter()
        .map(|&c| Tensor::randn([2, c, 64, 64], (Kind::Float, Device::Cpu)))
        .collect();
    let all: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    let s = Scenario::new(vec![0], 2).unwrap();
    let run = || {
        let (vs, net) = build(&small_config(&ch, 5));
        tch::manual_seed(5);
        let out = tch::no_grad(|| net.forward_train(&s, &all, true)).unwrap();
        (vs, out)
    };
    let (vs1, a) = run();
    let (vs2, b) = run();
    let v2 = vs2.variables();
    for (name, t) in vs1.variables() {
        assert_eq!(max_abs_diff(&t, &v2[&name]), 0.0, "{name}");
    }
    assert_eq!(max_abs_diff(&a.student.pred, &b.student.pred), 0.0);
    assert_eq!(
        dlkd(&a).total().double_value(&[]),
        dlkd(&b).total().double_value(&[])
    );
    // A different dropout draw changes the training output: dropout is really on.
    let (_vs3, net) = build(&small_config(&ch, 5));
    tch::manual_seed(7);
    let c = tch::no_grad(|| net.forward_train(&s, &all, true)).unwrap();
    assert!(max_abs_diff(&a.student.pred, &c.student.pred) > 0.0);
}
