package infer

import "fmt"

// cocoNames returns the 80 class names of the official data/coco.yaml, in
// class-id order.
func cocoNames() []string {
	return []string{
		"person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
		"fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
		"elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
		"skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
		"wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
		"broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
		"dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
		"toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
	}
}

// ClassNames returns the names of nc classes: given when it is not empty
// (it must then have nc entries), else the COCO names when nc is 80, else
// "class0", "class1", ...
func ClassNames(nc int, given []string) ([]string, error) {
	if len(given) > 0 {
		if len(given) != nc {
			return nil, fmt.Errorf("class_names has %d names, the model has %d classes", len(given), nc)
		}
		return append([]string(nil), given...), nil
	}
	if nc == 80 {
		return cocoNames(), nil
	}
	names := make([]string, nc)
	for i := range names {
		names[i] = fmt.Sprintf("class%d", i)
	}
	return names, nil
}
