package publish

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// BenchmarkPublisherThroughput measures how fast the publisher moves
// detections messages to a loopback mosquitto: from the first PublishJSON to
// the last message sent (QoS 0) or acknowledged by the broker (QoS 1).
func BenchmarkPublisherThroughput(b *testing.B) {
	m := newMosquitto(b, true)
	for _, qos := range []byte{0, 1} {
		b.Run(map[byte]string{0: "QoS0", 1: "QoS1"}[qos], func(b *testing.B) {
			cfg := testConfig(b, m.URL())
			cfg.QoS = qos
			cfg.QueueSize = b.N + 1
			cfg.OutboxMaxBytes = 1 << 30
			p, err := New(cfg, Options{DeviceID: "bench", Logger: discardLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close(context.Background())
			must(b, p.Start(context.Background()))
			waitFor(b, 10*time.Second, "connection", p.Connected)
			d := DetectionsPayload{Camera: "cam0", Frame: 1, Width: 1920, Height: 1080,
				Model: "3f1c0e6a0bd4c2e5d0c1f6a1a7e8b2c9d4e5f60718293a4b5c6d7e8f90a1b2c3", InferMS: 7.25,
				Detections: []Detection{
					{Class: "person", ClassID: 0, Score: 0.91, Box: Box{100, 200, 300, 600}, BoxNorm: [4]float32{0.1, 0.37, 0.1, 0.37}},
					{Class: "car", ClassID: 2, Score: 0.77, Box: Box{800, 500, 1200, 800}, BoxNorm: [4]float32{0.52, 0.6, 0.2, 0.27}},
				}}
			sent0 := p.Stats().Sent
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				d.Frame = uint64(i)
				if err := p.PublishDetections(&d); err != nil {
					b.Fatal(err)
				}
			}
			waitFor(b, 5*time.Minute, "all sent", func() bool { return p.Stats().Sent-sent0 >= uint64(b.N) })
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			if st := p.Stats(); st.DroppedQoS0+st.DroppedQoS1 > 0 {
				b.Fatalf("dropped: %+v", st)
			}
		})
	}
}

// BenchmarkPahoDirectThroughput is the reference for
// BenchmarkPublisherThroughput, run beside it by `make bench`: the same
// payload published straight through a bare paho client (memory store, no
// outbox, no sequence numbers) to the same kind of broker, waiting for every
// token. The ratio of the two is the cost of the publisher's durability.
func BenchmarkPahoDirectThroughput(b *testing.B) {
	m := newMosquitto(b, true)
	for _, qos := range []byte{0, 1} {
		b.Run(map[byte]string{0: "QoS0", 1: "QoS1"}[qos], func(b *testing.B) {
			opts := mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID("bench-direct").
				SetCleanSession(true).SetOrderMatters(false).SetWriteTimeout(0)
			c := mqtt.NewClient(opts)
			if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				b.Fatalf("connect: %v", tok.Error())
			}
			defer c.Disconnect(100)
			d := DetectionsPayload{Camera: "cam0", Frame: 1, Width: 1920, Height: 1080,
				Model: "3f1c0e6a0bd4c2e5d0c1f6a1a7e8b2c9d4e5f60718293a4b5c6d7e8f90a1b2c3", InferMS: 7.25,
				Detections: []Detection{
					{Class: "person", ClassID: 0, Score: 0.91, Box: Box{100, 200, 300, 600}, BoxNorm: [4]float32{0.1, 0.37, 0.1, 0.37}},
					{Class: "car", ClassID: 2, Score: 0.77, Box: Box{800, 500, 1200, 800}, BoxNorm: [4]float32{0.52, 0.6, 0.2, 0.27}},
				}}
			window := make([]mqtt.Token, 0, sendWindow)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				d.Frame = uint64(i)
				d.Stamp(uint64(i+1), time.Now())
				payload, err := json.Marshal(&d)
				if err != nil {
					b.Fatal(err)
				}
				// A sliding window like the publisher's sender: wait for
				// the oldest token only when sendWindow are in flight.
				if len(window) == cap(window) {
					if tok := window[0]; !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
						b.Fatalf("publish: %v", tok.Error())
					}
					window = append(window[:0], window[1:]...)
				}
				window = append(window, c.Publish("yolo7d/bench/cameras/cam0/detections", qos, false, payload))
			}
			for _, tok := range window {
				if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
					b.Fatalf("publish: %v", tok.Error())
				}
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
		})
	}
}
