package main

import "github.com/yolo7d/yolo7d/finetune"

// defaults are the trainer and evaluator of this build (see defaultTools).
func (toolbox) defaults() cliTools {
	return cliTools{tune: finetune.Run, eval: finetune.EvalDataset}
}
