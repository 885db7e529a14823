//! Per-modality encoders with their auxiliary single-modality decoders, and the compensation
//! encoders of the student branches (the reference's `Encoder`, and `rgb_else` / `ndsm_else`).
//!
//! Four stride-2 levels e1..e4 of widths w, 2w, 4w, 8w (w = `base_width`); levels 2 and 3 carry
//! BatchNorm. The returned features are pre-activation: LeakyReLU(0.2) is applied to a level only
//! on its way into the next level. The auxiliary decoder (d5..d8, transposed convolutions with
//! U-Net skips) predicts the segmentation from one modality alone; it is trained as a side task
//! and does not take part in inference.

use tch::nn;
use tch::{Kind, Tensor};

use super::layers::{channels_last, leaky, DownBlock, UpBlock};

/// The four feature maps of an encoder, at 1/2, 1/4, 1/8 and 1/16 of the input size.
pub(crate) type Features = [Tensor; 4];

/// The auxiliary single-modality decoder (reference `d5`..`d8`).
#[derive(Debug)]
struct AuxDecoder {
    d5: UpBlock,
    d6: UpBlock,
    d7: UpBlock,
    d8: UpBlock,
}

/// One encoder: a modality encoder (with auxiliary decoder) or a compensation encoder (without).
#[derive(Debug)]
pub(crate) struct Encoder {
    e1: DownBlock,
    e2: DownBlock,
    e3: DownBlock,
    e4: DownBlock,
    aux: Option<AuxDecoder>,
}

impl Encoder {
    /// `aux_classes`: `Some(K)` builds the auxiliary decoder predicting K classes.
    pub fn new(p: &nn::Path, c_in: i64, width: i64, aux_classes: Option<i64>) -> Self {
        let w = width;
        let aux = aux_classes.map(|k| AuxDecoder {
            d5: UpBlock::new(&(p / "d5"), 8 * w, 4 * w, true),
            d6: UpBlock::new(&(p / "d6"), 8 * w, 2 * w, true),
            d7: UpBlock::new(&(p / "d7"), 4 * w, w, true),
            d8: UpBlock::new(&(p / "d8"), 2 * w, k, false),
        });
        Encoder {
            e1: DownBlock::new(&(p / "e1"), c_in, w, false),
            e2: DownBlock::new(&(p / "e2"), w, 2 * w, true),
            e3: DownBlock::new(&(p / "e3"), 2 * w, 4 * w, true),
            e4: DownBlock::new(&(p / "e4"), 4 * w, 8 * w, false),
            aux,
        }
    }

    /// The four pre-activation feature maps.
    pub fn features(&self, x: &Tensor, train: bool) -> Features {
        let e1 = self.e1.forward_t(&channels_last(x), train);
        let e2 = self.e2.forward_t(&leaky(&e1), train);
        let e3 = self.e3.forward_t(&leaky(&e2), train);
        let e4 = self.e4.forward_t(&leaky(&e3), train);
        [e1, e2, e3, e4]
    }

    /// The auxiliary decoder's softmax prediction (float32) from this encoder's features, or
    /// `None` for a compensation encoder.
    pub(crate) fn aux_prediction(&self, f: &Features, train: bool) -> Option<Tensor> {
        let aux = self.aux.as_ref()?;
        let d5 = Tensor::cat(
            &[aux.d5.forward_t(&f[3].relu(), train), f[2].shallow_clone()],
            1,
        );
        let d6 = Tensor::cat(
            &[aux.d6.forward_t(&d5.relu(), train), f[1].shallow_clone()],
            1,
        );
        let d7 = Tensor::cat(
            &[aux.d7.forward_t(&d6.relu(), train), f[0].shallow_clone()],
            1,
        );
        Some(aux.d8.forward_t(&d7.relu(), train).softmax(1, Kind::Float))
    }

    /// For inference: BatchNorm folded, weights detached and stored as `kind`.
    pub(crate) fn prepare_inference(&mut self, kind: Kind) {
        for block in [&mut self.e1, &mut self.e2, &mut self.e3, &mut self.e4] {
            block.prepare_inference(kind);
        }
        if let Some(aux) = &mut self.aux {
            for block in [&mut aux.d5, &mut aux.d6, &mut aux.d7, &mut aux.d8] {
                block.prepare_inference(kind);
            }
        }
    }
}
