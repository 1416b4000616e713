;; N-queens: counts the ways to place N non-attacking queens on an N x N board.
;; SpareCycles module ABI v1 (see README.md). args = [N], 2 <= N <= 20.
;; Unit u places the first row's queen in column u (N units); its items are the columns of the
;; second row's queen (N items), so the worker spreads one unit over its cores. The rest of the
;; board is searched by the classic bitmask backtracking. Output: one i64, the count.
(module
  (memory (export "memory") 1)

  ;; The I/O area: args at 1024, area A at 1280, area B at 1536.
  (func (export "sc_io") (result i32) (i32.const 1024))
  (func (export "sc_words") (result i32) (i32.const 1))
  (func (export "sc_floats") (result i32) (i32.const 0))

  ;; N from the args, or 0 when it is missing or out of range.
  (func $n (param $nargs i32) (result i32)
    (local $n i64)
    (if (i32.lt_s (local.get $nargs) (i32.const 1)) (then (return (i32.const 0))))
    (local.set $n (i64.load (i32.const 1024)))
    (if (i32.or (i64.lt_s (local.get $n) (i64.const 2)) (i64.gt_s (local.get $n) (i64.const 20)))
      (then (return (i32.const 0))))
    (i32.wrap_i64 (local.get $n)))

  (func (export "sc_units") (param $nargs i32) (result i64)
    (local $n i32)
    (local.set $n (call $n (local.get $nargs)))
    (if (i32.eqz (local.get $n)) (then (return (i64.const -1))))
    (i64.extend_i32_u (local.get $n)))

  (func (export "sc_items") (param $nargs i32) (param $unit i64) (result i64)
    (local $n i32)
    (local.set $n (call $n (local.get $nargs)))
    (if (i32.eqz (local.get $n)) (then (return (i64.const -1))))
    (i64.extend_i32_u (local.get $n)))

  ;; Solutions below a partial board: occupied columns and the two diagonal masks.
  (func $solve (param $cols i32) (param $d1 i32) (param $d2 i32) (param $all i32) (result i64)
    (local $free i32) (local $bit i32) (local $count i64)
    (if (i32.eq (local.get $cols) (local.get $all)) (then (return (i64.const 1))))
    (local.set $free
      (i32.and (local.get $all)
        (i32.xor (i32.or (local.get $cols) (i32.or (local.get $d1) (local.get $d2)))
                 (i32.const -1))))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $free)))
        (local.set $bit (i32.and (local.get $free) (i32.sub (i32.const 0) (local.get $free))))
        (local.set $free (i32.xor (local.get $free) (local.get $bit)))
        (local.set $count
          (i64.add (local.get $count)
            (call $solve
              (i32.or (local.get $cols) (local.get $bit))
              (i32.shl (i32.or (local.get $d1) (local.get $bit)) (i32.const 1))
              (i32.shr_u (i32.or (local.get $d2) (local.get $bit)) (i32.const 1))
              (local.get $all))))
        (br $next)))
    (local.get $count))

  ;; Unit = first row's column; items lo..hi = second row's columns.
  (func (export "sc_compute") (param $nargs i32) (param $unit i64) (param $lo i64) (param $hi i64)
                              (result i32)
    (local $n i32) (local $all i32) (local $b0 i32) (local $b1 i32) (local $c i64)
    (local $count i64)
    (local.set $n (call $n (local.get $nargs)))
    (if (i32.eqz (local.get $n)) (then (return (i32.const -1))))
    (if (i32.or (i64.lt_s (local.get $unit) (i64.const 0))
                (i64.ge_s (local.get $unit) (i64.extend_i32_u (local.get $n))))
      (then (return (i32.const -2))))
    (if (i32.or (i64.lt_s (local.get $lo) (i64.const 0))
                (i64.gt_s (local.get $hi) (i64.extend_i32_u (local.get $n))))
      (then (return (i32.const -3))))
    (local.set $all (i32.sub (i32.shl (i32.const 1) (local.get $n)) (i32.const 1)))
    (local.set $b0 (i32.shl (i32.const 1) (i32.wrap_i64 (local.get $unit))))
    (local.set $c (local.get $lo))
    (block $done
      (loop $next
        (br_if $done (i64.ge_s (local.get $c) (local.get $hi)))
        (local.set $b1 (i32.shl (i32.const 1) (i32.wrap_i64 (local.get $c))))
        (if (i32.eqz (i32.and (local.get $b1)
                       (i32.or (local.get $b0)
                         (i32.or (i32.shl (local.get $b0) (i32.const 1))
                                 (i32.shr_u (local.get $b0) (i32.const 1))))))
          (then
            (local.set $count
              (i64.add (local.get $count)
                (call $solve
                  (i32.or (local.get $b0) (local.get $b1))
                  (i32.shl (i32.or (i32.shl (local.get $b0) (i32.const 1)) (local.get $b1))
                           (i32.const 1))
                  (i32.shr_u (i32.or (i32.shr_u (local.get $b0) (i32.const 1)) (local.get $b1))
                             (i32.const 1))
                  (local.get $all))))))
        (local.set $c (i64.add (local.get $c) (i64.const 1)))
        (br $next)))
    (i64.store (i32.const 1280) (local.get $count))
    (i32.const 0))

  (func (export "sc_combine") (result i32)
    (i64.store (i32.const 1280)
      (i64.add (i64.load (i32.const 1280)) (i64.load (i32.const 1536))))
    (i32.const 0)))
