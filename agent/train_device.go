package agent

import (
	"errors"
	"fmt"

	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/infer/cudnn"
	"github.com/yolo7d/yolo7d/tiny"
)

// OpenTrainDevice opens the device a fine-tune trains on: name is cpu,
// cudnn or auto ([finetune] device, --device); det gives the GPU library
// directory and ordinal. It returns a nil device for the CPU (finetune.Run
// then makes its own), a close function (never nil), and a note saying
// what runs and, for auto, why the GPU was not used.
func OpenTrainDevice(name string, det infer.Options) (tiny.TrainDevice, func(), string, error) {
	nop := func() {}
	switch name {
	case "", "cpu":
		return nil, nop, "training on the CPU", nil
	case "cudnn", "auto":
	default:
		return nil, nop, "", fmt.Errorf("training device %q: want cpu, cudnn or auto", name)
	}
	opts := cudnn.Options{Device: det.GPUDevice}
	if det.GPULibDir != "" {
		opts.Dirs = []string{det.GPULibDir}
	}
	lib, err := cudnn.Load(opts)
	if err == nil {
		var dev *cudnn.Device
		if dev, err = lib.NewDevice(cudnn.DeviceOptions{}); err == nil {
			return dev, func() { dev.Close() }, "training on " + lib.Info().String(), nil
		}
	}
	if name == "auto" && errors.Is(err, cudnn.ErrNotAvailable) {
		return nil, nop, "training on the CPU: " + err.Error(), nil
	}
	return nil, nop, "", fmt.Errorf("training device %s: %w", name, err)
}
