package multipath

import (
	"context"
	"errors"
	"fmt"

	"github.com/lunbridge/lunbridge/blockdev"
)

var _ blockdev.Reserver = (*Device)(nil)

// liveReservers returns the connections of the paths in service now.
func (d *Device) liveReservers() ([]*Path, []blockdev.Reserver, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ps []*Path
	var rs []blockdev.Reserver
	for _, p := range d.paths {
		if p.nx == nil {
			continue
		}
		r, ok := p.nx.conn.(blockdev.Reserver)
		if !ok {
			return nil, nil, fmt.Errorf("multipath: path %d: persistent reservations: %w", p.idx, blockdev.ErrNotSupported)
		}
		ps, rs = append(ps, p), append(rs, r)
	}
	if len(rs) == 0 {
		return nil, nil, fmt.Errorf("multipath: no path in service: %w", blockdev.ErrUnavailable)
	}
	return ps, rs, nil
}

// Register registers key on every path's I_T nexus (each path has an ISID
// of its own, so each is a registrant of its own); a path reinstated later
// registers it before going back into service.
func (d *Device) Register(ctx context.Context, key uint64) error {
	d.mu.Lock()
	d.prKey = key
	d.mu.Unlock()
	ps, rs, err := d.liveReservers()
	if err != nil {
		return err
	}
	var errs []error
	for i, r := range rs {
		if err := r.Register(ctx, key); err != nil {
			errs = append(errs, fmt.Errorf("path %d (%s): %w", ps[i].idx, ps[i].ep.Portal(), err))
		}
	}
	return errors.Join(errs...)
}

// Reserve takes the reservation through one path in service; every
// registered path may then write (Write Exclusive – Registrants Only).
func (d *Device) Reserve(ctx context.Context, key, preempt uint64) error {
	_, rs, err := d.liveReservers()
	if err != nil {
		return err
	}
	return rs[0].Reserve(ctx, key, preempt)
}

// Release releases the reservation (a no-op on the paths not holding it)
// and unregisters every path in service.
func (d *Device) Release(ctx context.Context, key uint64) error {
	d.mu.Lock()
	d.prKey = 0
	d.mu.Unlock()
	_, rs, err := d.liveReservers()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range rs {
		errs = append(errs, r.Release(ctx, key))
	}
	return errors.Join(errs...)
}

// registerReinstated registers the device's key on a reinstated path's
// connection before it goes back into service: an unregistered nexus
// would meet RESERVATION CONFLICT on its first write.
func (d *Device) registerReinstated(ctx context.Context, c pathConn) error {
	d.mu.Lock()
	key := d.prKey
	d.mu.Unlock()
	if key == 0 {
		return nil
	}
	r, ok := c.(blockdev.Reserver)
	if !ok {
		return fmt.Errorf("persistent reservations: %w", blockdev.ErrNotSupported)
	}
	if err := r.Register(ctx, key); err != nil {
		return fmt.Errorf("registering the reservation key: %w", err)
	}
	return nil
}
