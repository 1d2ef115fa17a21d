package multipath_test

import (
	"context"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/multipath"
)

// One LUN through two portals of one target: failover with immediate
// failback, I/O queued at most 30 s while no path is usable.
func ExampleOpen() {
	ctx := context.Background()
	base := initiator.Config{InitiatorName: "iqn.2026-11.org.lunbridge:host", TargetName: "iqn.2026-11.org.example:disk"}
	a, b := base, base
	a.Portal, b.Portal = "127.0.0.1:3260", "127.0.0.2:3260"
	d, err := multipath.Open(ctx, []initiator.Config{a, b}, 1, multipath.Options{
		Policy:        multipath.PolicyFailover,
		Failback:      "immediate",
		NoPathTimeout: 30 * time.Second,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()
	go d.ServeControl(ctx, "/run/lunbridge/control.sock") // for `lunbridge status`
	buf := make([]byte, d.BlockSize())
	if err := d.ReadAt(ctx, buf, 0); err != nil {
		fmt.Println(err)
	}
	for _, p := range d.Status().Paths {
		fmt.Println(p.Portal, p.State, p.IOs)
	}
}
