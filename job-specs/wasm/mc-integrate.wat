;; Monte Carlo integration of f(x) = 4 / (1 + x^2) over [a, b] (over [0, 1] the answer is pi).
;; SpareCycles module ABI v1 (see README.md). args = [seed (integer), a (float), b (float)].
;; The job gives range = [0, samples] and a unit_size: sample j is
;;   x_j = a + (b - a) * (top 53 bits of SplitMix64's mix(seed + (j + 1) * gamma)) / 2^53,
;; so any thread of any worker computes the same point. Output: [sum of f (f64), samples (i64)];
;; sc_finish turns the total into [(b - a) * mean of f, samples].
(module
  (memory (export "memory") 1)

  (func (export "sc_io") (result i32) (i32.const 1024))
  (func (export "sc_words") (result i32) (i32.const 2))
  ;; Word 0 is an f64, word 1 an i64.
  (func (export "sc_floats") (result i32) (i32.const 1))

  ;; SplitMix64's output function.
  (func $mix (param $z i64) (result i64)
    (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                           (i64.const 0xbf58476d1ce4e5b9)))
    (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                           (i64.const 0x94d049bb133111eb)))
    (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31))))

  (func $f (param $x f64) (result f64)
    (f64.div (f64.const 4)
             (f64.add (f64.const 1) (f64.mul (local.get $x) (local.get $x)))))

  (func (export "sc_compute") (param $nargs i32) (param $unit i64) (param $lo i64) (param $hi i64)
                              (result i32)
    (local $seed i64) (local $a f64) (local $w f64) (local $j i64) (local $u f64)
    (local $sum f64)
    (if (i32.lt_s (local.get $nargs) (i32.const 3)) (then (return (i32.const -1))))
    (local.set $seed (i64.load (i32.const 1024)))
    (local.set $a (f64.load (i32.const 1032)))
    (local.set $w (f64.sub (f64.load (i32.const 1040)) (local.get $a)))
    (local.set $j (local.get $lo))
    (block $done
      (loop $next
        (br_if $done (i64.ge_u (local.get $j) (local.get $hi)))
        (local.set $u
          (f64.mul
            (f64.convert_i64_u
              (i64.shr_u
                (call $mix (i64.add (local.get $seed)
                                    (i64.mul (i64.add (local.get $j) (i64.const 1))
                                             (i64.const 0x9e3779b97f4a7c15))))
                (i64.const 11)))
            (f64.const 0x1p-53)))
        (local.set $sum
          (f64.add (local.get $sum)
                   (call $f (f64.add (local.get $a) (f64.mul (local.get $w) (local.get $u))))))
        (local.set $j (i64.add (local.get $j) (i64.const 1)))
        (br $next)))
    (f64.store (i32.const 1280) (local.get $sum))
    (i64.store (i32.const 1288) (i64.sub (local.get $hi) (local.get $lo)))
    (i32.const 0))

  (func (export "sc_combine") (result i32)
    (f64.store (i32.const 1280)
      (f64.add (f64.load (i32.const 1280)) (f64.load (i32.const 1536))))
    (i64.store (i32.const 1288)
      (i64.add (i64.load (i32.const 1288)) (i64.load (i32.const 1544))))
    (i32.const 0))

  (func (export "sc_finish") (param $nargs i32) (param $units i64) (result i32)
    (if (i32.lt_s (local.get $nargs) (i32.const 3)) (then (return (i32.const -1))))
    (if (i64.eqz (i64.load (i32.const 1288))) (then (return (i32.const -2))))
    (f64.store (i32.const 1280)
      (f64.div
        (f64.mul (f64.sub (f64.load (i32.const 1040)) (f64.load (i32.const 1032)))
                 (f64.load (i32.const 1280)))
        (f64.convert_i64_u (i64.load (i32.const 1288)))))
    (i32.const 0)))
