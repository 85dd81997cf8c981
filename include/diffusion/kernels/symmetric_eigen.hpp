#pragma once
// Eigen-decomposition of a real symmetric matrix in double precision, through Eigen's SelfAdjointEigenSolver
// (Householder tridiagonalisation, then the implicit symmetric QR algorithm; backward stable: the computed
// eigenvalues are exact for a matrix within ~n * 2^-53 * ||A|| of A). The metrics use it for matrix square roots of
// covariance matrices (metrics/frechet.hpp). Single-threaded and deterministic.
//
//   symmetric_eigen(n, a, values, vectors)
//     requires: a is n x n, row-major, symmetric (only its lower triangle is read, as Eigen does).
//     ensures:  values[0..n) ASSIGNED, ascending; if vectors is not null, vectors (n x n, row-major) is ASSIGNED
//               with eigenvector i in column i (orthonormal), so a = V diag(values) V^T.
//   Throws if the QR iteration does not converge (Eigen reports NoConvergence: NaN or Inf in a, in practice).

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "diffusion/core/error.hpp"
#include "diffusion/core/shape.hpp"

namespace diffusion::kernels {

inline void symmetric_eigen(Index n, const double* a, double* values, double* vectors) {
  DIFFUSION_CHECK(n > 0, "symmetric_eigen: matrix size must be positive, got " << n);
  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const Matrix> A(a, n, n);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(
      A, vectors ? Eigen::ComputeEigenvectors : Eigen::EigenvaluesOnly);
  DIFFUSION_CHECK(solver.info() == Eigen::Success,
                  "symmetric_eigen: the QR iteration did not converge on a " << n << " x " << n
                                                                              << " matrix (NaN or Inf in it?)");
  for (Index i = 0; i < n; ++i) values[i] = solver.eigenvalues()[i];
  if (vectors) Eigen::Map<Matrix>(vectors, n, n) = solver.eigenvectors();
}

}  // namespace diffusion::kernels
