package agent

import "github.com/yolo7d/yolo7d/finetune"

// defaultTuner is the trainer of this build, finetune.Run; tests inject a
// fake through finetuner.tuner instead (see tunerFor).
func (a *Agent) defaultTuner() finetune.Tuner { return finetune.Run }
