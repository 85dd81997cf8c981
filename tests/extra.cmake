# Tests that are not Catch2 executables.

# A consumer project finds the installed package, or adds the source tree, and instantiates the templates.
foreach(mode find_package add_subdirectory)
  add_test(NAME consumer.${mode}
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/consumer/run_consumer.sh ${mode} ${PROJECT_SOURCE_DIR}
            ${PROJECT_BINARY_DIR} ${CMAKE_CURRENT_BINARY_DIR}/consumer_${mode})
  # The exit status decides (run_consumer.sh fails unless the program exits 0 and prints its "ok" line): a
  # PASS_REGULAR_EXPRESSION would make CTest ignore the exit status.
  set_tests_properties(consumer.${mode} PROPERTIES TIMEOUT ${DIFFUSION_TEST_TIMEOUT})
endforeach()

# The README's API tour. Its first ```cpp block is examples/tour/tour.cpp verbatim (readme.tour_is_the_file checks),
# which the suite builds and runs at tiny sizes (readme.tour_runs: 16 synthetic images, 2 steps, 2 samples; it prints
# the sample grid's path). Its second block, the parts underneath, is cut out by tests/readme_tour.sh (its #include /
# using lines at file scope, the rest as the body of a function that is never called, since it reads Fashion-MNIST)
# and compiled: a README edit that breaks the tour breaks the build or a test.
add_executable(tour ${PROJECT_SOURCE_DIR}/examples/tour/tour.cpp)
target_link_libraries(tour PRIVATE diffusion::diffusion diffusion_project_options)
add_test(NAME readme.tour_is_the_file
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/readme_tour.sh check ${PROJECT_SOURCE_DIR}/README.md
          ${PROJECT_SOURCE_DIR}/examples/tour/tour.cpp)
add_test(NAME readme.tour_runs
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tour/run_tour.sh $<TARGET_FILE:tour> ${CMAKE_CURRENT_BINARY_DIR}/tour_run)
set_tests_properties(readme.tour_is_the_file readme.tour_runs PROPERTIES TIMEOUT ${DIFFUSION_TEST_TIMEOUT}
  ENVIRONMENT "${DIFFUSION_TEST_ENVIRONMENT}")
add_custom_command(OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/readme_tour.cpp
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/readme_tour.sh extract ${PROJECT_SOURCE_DIR}/README.md
          ${CMAKE_CURRENT_BINARY_DIR}/readme_tour.cpp
  DEPENDS ${PROJECT_SOURCE_DIR}/README.md ${CMAKE_CURRENT_SOURCE_DIR}/readme_tour.sh
  COMMENT "Extracting the API tour from README.md")
add_executable(readme_tour ${CMAKE_CURRENT_BINARY_DIR}/readme_tour.cpp)
target_link_libraries(readme_tour PRIVATE diffusion::diffusion diffusion_project_options)

# The samplers' static_assert names the model signature they expect: compiling tests/samplers/wrong_model.cpp (a model
# that takes one int timestep) must fail with that message.
add_test(NAME samplers.wrong_model_names_the_signature
  COMMAND ${CMAKE_CXX_COMPILER} -std=c++17 -fsyntax-only -I${PROJECT_SOURCE_DIR}/include
          ${CMAKE_CURRENT_SOURCE_DIR}/samplers/wrong_model.cpp)
set_tests_properties(samplers.wrong_model_names_the_signature PROPERTIES TIMEOUT ${DIFFUSION_TEST_TIMEOUT}
  PASS_REGULAR_EXPRESSION "static.assert.*the model must be callable as model\\(const Tensor<T>& x, const std::vector<std::int64_t>& t, Tensor<T>& out\\)")

# scripts/plot_training.sh draws a run's loss and FID curves with gnuplot (skipped, and said so, without gnuplot-nox).
add_test(NAME scripts.plot_training
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/scripts/plot_training_test.sh ${PROJECT_SOURCE_DIR}
          ${CMAKE_CURRENT_BINARY_DIR}/plot_training)
set_tests_properties(scripts.plot_training PROPERTIES TIMEOUT ${DIFFUSION_TEST_TIMEOUT}
  SKIP_REGULAR_EXPRESSION "${DIFFUSION_TEST_SKIP_MARKER}")
