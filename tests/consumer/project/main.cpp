// Consumer smoke test: include the umbrella header (and testing.hpp for the oracle), run a 2-token
// linear attention through the reference and through the fast operator (dispatched to the best ISA
// unit), and check the hand-computed answer (see test_linear_reference.cpp).
#include <polyattn/polyattn.hpp>
#include <polyattn/testing.hpp>

#include <cstdio>
#include <vector>

int main() {
  std::vector<float> q{1, 2}, k{3, 4}, v{5, 6}, o_fast(2);
  std::vector<double> o(2);
  polyattn::LinearInputs in{.q = polyattn::bthd(q.data(), 1, 2, 1, 1),
                            .k = polyattn::bthd(k.data(), 1, 2, 1, 1),
                            .v = polyattn::bthd(v.data(), 1, 2, 1, 1)};
  polyattn::reference::linear_recurrence<double>(in, {.scale = 1.0},
                                                 {.o = polyattn::bthd(o.data(), 1, 2, 1, 1)});
  polyattn::presets::linear_attn{}.forward<polyattn::Chunked<16>>(
      in, {.o = polyattn::bthd(o_fast.data(), 1, 2, 1, 1)}, {.scale = 1.0});
  std::printf("consumer: isa %s, o = [%g, %g], fast o = [%g, %g]\n",
              polyattn::simd::isa_name(polyattn::simd::best_arch()), o[0], o[1], o_fast[0],
              o_fast[1]);
  return (o[0] == 15.0 && o[1] == 78.0 && o_fast[0] == 15.f && o_fast[1] == 78.f) ? 0 : 1;
}
