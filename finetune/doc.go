// Package finetune trains a YOLOv7-tiny model on the device, the way the
// official YOLOv7 code does, and decides whether the result may replace
// the running model.
//
// The pieces, each in its own file:
//   - data: data.yaml (datayaml.go), YOLO txt labels checked line by line
//     (labels.go, dataset.go), image decoding (imageio.go), the official
//     augmentation — mosaic, random affine, HSV jitter, flip, letterbox —
//     deterministic under a seed (augment.go), and a prefetching loader
//     (loader.go);
//   - loss: ComputeLossOTA and ComputeLossAuxOTA — find_3/find_5 candidate
//     positives, SimOTA dynamic-k assignment (assign.go), CIoU (ciou.go),
//     objectness and class BCE with analytic gradients (loss.go);
//   - optimisation: SGD with Nesterov momentum and the three parameter
//     groups (optim.go), warm-up and the one-cycle schedule (schedule.go),
//     the ModelEMA (ema.go), the hyperparameters of hyp.scratch.tiny
//     (hyp.go); one training step is Trainer.Step (train.go);
//   - evaluation: the matching and ap_per_class of the official test.py
//     (metrics.go, eval.go, evaldata.go);
//   - the run: Run (run.go, runner.go) unfolds a deploy model into the
//     training form, trains with per-epoch checkpoints that resume bit for
//     bit (checkpoint.go), folds the EMA weights back into the deploy form,
//     checks the folding, evaluates the candidate and the current model on
//     the same split and applies the promotion gate.
//
// The synthetic scenes used by the demo model and the tests are in the
// synth subpackage.
package finetune
