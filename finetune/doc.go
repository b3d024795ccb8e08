// Package finetune will hold on-device training: datasets in the YOLO txt
// layout, augmentation, the coarse-to-fine OTA loss, SGD with the official
// schedules, the EMA, mAP evaluation and the promotion gate. It is empty in
// this release; the MQTT and CLI commands that will start a fine-tune are
// already validated and answer that it is not available yet.
package finetune
